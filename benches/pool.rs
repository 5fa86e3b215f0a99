//! A pool loan and its release against the system allocator, at three sizes:
//!
//! - `pool/loan+release/<bytes>`: `Pool::loan(bytes)`, one byte written, dropped (the
//!   chunk is freed): two compare-and-swaps and a store, the same work whatever the
//!   size.
//! - `pool/malloc+free/<bytes>`: `std::alloc::alloc` and `dealloc` of the same size and
//!   alignment (glibc's malloc under the default global allocator), one byte written.
//!
//! Both run on one thread pinned to the first core of the recommended pair. The pool
//! lives in a segment under `/dev/shm` (64 B x 1024, 4 KiB x 1024, 1 MiB x 16), its
//! pages faulted in before timing.
//!
//! Run: `cargo bench --bench pool`.

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shm_transport::alloc::pool::{CHUNK_ALIGN, Pool};
use shm_transport::alloc::{Location, Segment, SegmentOptions};
use shm_transport::sync::affinity;

const SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn bench(c: &mut Criterion) {
    if let Ok(pair) = affinity::recommend_pair() {
        affinity::pin_current_thread(pair.producer).unwrap();
    }
    let location = Location::Name(format!("shm-bench-pool-{}", std::process::id()));
    let _ = Segment::remove(&location);
    let pool = Pool::builder(location.clone())
        .class(64, 1024)
        .class(4096, 1024)
        .class(1 << 20, 16)
        .segment_options(SegmentOptions::default().prefault(true))
        .create()
        .unwrap();
    Segment::remove(&location).unwrap();

    let mut group = c.benchmark_group("pool");
    for size in SIZES {
        // Sanity: a loan of this size works and comes back.
        drop(pool.loan(size).unwrap());
        assert!(pool.stats().all_free());
        group.bench_with_input(BenchmarkId::new("loan+release", size), &size, |b, &size| {
            b.iter(|| {
                let mut chunk = pool.loan(black_box(size)).unwrap();
                chunk.as_mut_slice()[0] = 1;
                black_box(&chunk);
            });
        });
        let layout = Layout::from_size_align(size, CHUNK_ALIGN as usize).unwrap();
        group.bench_with_input(
            BenchmarkId::new("malloc+free", size),
            &layout,
            |b, &layout| {
                b.iter(|| {
                    // SAFETY: `layout` has a non-zero size; the block is written once and
                    // freed with the same layout.
                    unsafe {
                        let block = alloc(black_box(layout));
                        assert!(!block.is_null());
                        block.write(1);
                        dealloc(black_box(block), layout);
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
