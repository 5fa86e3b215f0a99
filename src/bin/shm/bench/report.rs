//! Results of `shm bench`: percentiles, per-round ratios, the table, JSON and the plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::machine::Machine;
use super::throughput;
use super::transport::Transport;

/// The largest round trip a histogram holds, ns (one minute).
const MAX_NS: u64 = 60_000_000_000;

/// A new histogram of round-trip times in ns, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One-way latency percentiles, ns: each is the round-trip percentile halved.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(round_trips: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| round_trips.value_at_quantile(q) as f64 / 2.0;
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: round_trips.max() as f64 / 2.0,
        }
    }
}

/// One round of one transport and size, with the limit probe of its size run just before it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    /// The probe's one-way p50 in this round, ns: the machine's state at the time.
    pub probe_p50_ns: f64,
    /// The transport's one-way p50 in this round, ns.
    pub p50_ns: f64,
    /// `p50_ns / probe_p50_ns`.
    pub ratio: f64,
    /// The probe's one-way mean per round trip, median over its batches, ns (0 when the
    /// round had too few round trips for a batch).
    pub probe_batched_ns: f64,
    /// The transport's one-way mean per round trip, median over its batches, ns.
    pub batched_ns: f64,
    /// `batched_ns / probe_batched_ns`.
    pub batched_ratio: f64,
}

/// Everything measured for one transport and payload size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub transport: &'static str,
    /// Payload bytes per message (the limit moves the same).
    pub size: usize,
    /// Round trips timed one by one (the percentiles), over all rounds.
    pub round_trips: u64,
    /// Round trips timed in batches (the batched figure), over all rounds.
    pub batched_round_trips: u64,
    /// One-way latency (round trip / 2) over all rounds, ns.
    pub one_way_ns: Percentiles,
    /// The median over rounds of this round's p50 / the paired probe's p50: how far
    /// above the physical limit, in a way that holds while the machine drifts.
    pub p50_vs_limit: f64,
    /// The same typical one-way latency from batches of round trips timed together (one
    /// clock read per batch: finer than the clock's step), median over rounds, ns.
    pub batched_ns: f64,
    /// The median over rounds of this round's batched figure / the paired probe's: the
    /// ratio to judge by when the clock's step is coarse against the latency.
    pub batched_vs_limit: f64,
    /// Each round, in the order run.
    pub rounds: Vec<Round>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

impl Row {
    pub fn new(transport: Transport, size: usize) -> Row {
        Row {
            transport: transport.name(),
            size,
            round_trips: 0,
            batched_round_trips: 0,
            one_way_ns: Percentiles::of(&histogram()),
            p50_vs_limit: 0.0,
            batched_ns: 0.0,
            batched_vs_limit: 0.0,
            rounds: Vec::new(),
            histogram: histogram(),
        }
    }

    /// Adds one round's round trips (ns, sorted) and the p50 of its probe (round trips,
    /// ns).
    pub fn add(&mut self, sorted_ns: &[u64], probe_round_trip_p50: f64) -> Result<()> {
        if sorted_ns.is_empty() {
            return Ok(());
        }
        for &ns in sorted_ns {
            self.histogram
                .record(ns.clamp(1, MAX_NS))
                .context("recording a round trip")?;
        }
        self.round_trips += sorted_ns.len() as u64;
        let p50 = sorted_median(sorted_ns) / 2.0;
        let probe = probe_round_trip_p50 / 2.0;
        self.rounds.push(Round {
            probe_p50_ns: probe,
            p50_ns: p50,
            ratio: if probe > 0.0 { p50 / probe } else { 0.0 },
            probe_batched_ns: 0.0,
            batched_ns: 0.0,
            batched_ratio: 0.0,
        });
        self.one_way_ns = Percentiles::of(&self.histogram);
        let ratios: Vec<f64> = self.rounds.iter().map(|r| r.ratio).collect();
        self.p50_vs_limit = median(&ratios);
        Ok(())
    }
}

impl Row {
    /// The ratio to the limit to judge by: the batched one when batches ran.
    pub fn vs_limit(&self) -> f64 {
        if self.batched_vs_limit > 0.0 {
            self.batched_vs_limit
        } else {
            self.p50_vs_limit
        }
    }

    /// Adds one round's batches (each `batch` round trips, ns, sorted) to the round that
    /// [`add`](Self::add) recorded last, with the probe's batched one-way figure (ns).
    pub fn add_batched(&mut self, sorted_ns: &[u64], batch: usize, probe_one_way: f64) {
        let Some(round) = self.rounds.last_mut() else {
            return;
        };
        if sorted_ns.is_empty() {
            return;
        }
        self.batched_round_trips += (sorted_ns.len() * batch) as u64;
        let one_way = batched_one_way(sorted_ns, batch);
        round.probe_batched_ns = probe_one_way;
        round.batched_ns = one_way;
        round.batched_ratio = if probe_one_way > 0.0 {
            one_way / probe_one_way
        } else {
            0.0
        };
        let done: Vec<&Round> = self.rounds.iter().filter(|r| r.batched_ns > 0.0).collect();
        self.batched_ns = median(&done.iter().map(|r| r.batched_ns).collect::<Vec<_>>());
        self.batched_vs_limit = median(&done.iter().map(|r| r.batched_ratio).collect::<Vec<_>>());
    }
}

/// The one-way figure of sorted batch durations (ns, `batch` round trips each): the
/// median batch over the round trips in it, halved.
pub fn batched_one_way(sorted_ns: &[u64], batch: usize) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    sorted_median(sorted_ns) / batch as f64 / 2.0
}

/// The median of a sorted, non-empty slice.
pub fn sorted_median(sorted: &[u64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid] as f64
    } else {
        (sorted[mid - 1] as f64 + sorted[mid] as f64) / 2.0
    }
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub round_trips: u64,
    pub rounds: u32,
    pub time_limit_s: f64,
    pub sizes: Vec<usize>,
    pub transports: Vec<&'static str>,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Config,
    /// Whether Ctrl-C ended the run early: the figures cover what ran before it.
    pub interrupted: bool,
    /// Round trips per batch in the batched half of every latency round.
    pub batch: usize,
    pub latency: Vec<Row>,
    pub throughput: Vec<throughput::Row>,
}

impl Report {
    /// The table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.machine);
        if self.interrupted {
            let _ = writeln!(
                out,
                "interrupted: the figures cover the rounds run before Ctrl-C"
            );
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                out,
                "\none-way latency (round trip / 2), ns; batched = the typical one-way time from \
                 batches of {} round trips timed together;\nx limit = batched / the limit's of the \
                 same size in the same round, median over rounds (p50s when no batch ran)",
                self.batch
            );
            let _ = writeln!(
                out,
                "{:>6}  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>11}",
                "bytes",
                "transport",
                "batched",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "p99.99",
                "max",
                "x limit",
                "round trips"
            );
            for row in &self.latency {
                let p = row.one_way_ns;
                let _ = writeln!(
                    out,
                    "{:>6}  {:<14} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>8.2} {:>11}",
                    row.size,
                    row.transport,
                    row.batched_ns,
                    p.p50,
                    p.p90,
                    p.p99,
                    p.p99_9,
                    p.p99_99,
                    p.max,
                    row.vs_limit(),
                    row.round_trips
                );
            }
            let probes: Vec<f64> = self
                .latency
                .iter()
                .flat_map(|r| r.rounds.iter().map(|round| round.probe_p50_ns))
                .collect();
            if let (Some(lo), Some(hi)) = (
                probes.iter().copied().reduce(f64::min),
                probes.iter().copied().reduce(f64::max),
            ) {
                let _ = writeln!(
                    out,
                    "drift: the limit probes' p50s ranged {lo:.1}..{hi:.1} ns over {} rounds \
                     (every round is in the JSON)",
                    probes.len()
                );
            }
        }
        if !self.throughput.is_empty() {
            let _ = writeln!(out, "\none-way throughput, median over rounds");
            let _ = writeln!(
                out,
                "{:>6}  {:<13} {:>6} {:>5} {:>14} {:>12} {:>12}",
                "bytes", "transport", "batch", "subs", "messages/s", "MB/s", "messages"
            );
            for row in &self.throughput {
                let _ = writeln!(
                    out,
                    "{:>6}  {:<13} {:>6} {:>5} {:>14.0} {:>12.1} {:>12}",
                    row.message_bytes,
                    row.transport,
                    row.batch,
                    row.subscribers,
                    row.messages_per_s,
                    row.bytes_per_s / 1e6,
                    row.messages
                );
            }
        }
        out
    }

    /// Draws each transport's one-way latency by percentile, one chart per payload size,
    /// as an SVG file: the x axis is in nines (90%, 99%, 99.9%...), the y axis in ns on a
    /// log scale.
    pub fn plot(&self, path: &Path) -> Result<()> {
        use plotters::prelude::*;

        let mut sizes: Vec<usize> = self.latency.iter().map(|r| r.size).collect();
        sizes.dedup();
        if sizes.is_empty() {
            anyhow::bail!("nothing was measured, so there is nothing to plot");
        }
        let height = 360 * sizes.len() as u32;
        let root = SVGBackend::new(path, (960, height)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let panels = root.split_evenly((sizes.len(), 1));
        let max_nines = 5.0f64;
        for (panel, &size) in panels.iter().zip(&sizes) {
            let rows: Vec<&Row> = self
                .latency
                .iter()
                .filter(|r| r.size == size && r.round_trips > 0)
                .collect();
            let lo = rows
                .iter()
                .map(|r| r.histogram.min() as f64 / 2.0)
                .fold(f64::MAX, f64::min)
                .max(1.0);
            let hi = rows
                .iter()
                .map(|r| r.histogram.max() as f64 / 2.0)
                .fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("one-way latency by percentile, {size}-byte messages"),
                    ("sans-serif", 18),
                )
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..max_nines, (lo * 0.8..hi * 1.25).log_scale())
                .map_err(|e| draw(&e))?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("ns")
                .x_labels(6)
                .x_label_formatter(&|x| nines_label(*x))
                .draw()
                .map_err(|e| draw(&e))?;
            for (i, row) in rows.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = (0..=(max_nines * 20.0) as u32)
                    .map(|step| {
                        let nines = f64::from(step) / 20.0;
                        let q = 1.0 - 10f64.powf(-nines);
                        (nines, row.histogram.value_at_quantile(q) as f64 / 2.0)
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|e| draw(&e))?
                    .label(row.transport)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw(&e))?;
        }
        root.present().map_err(|e| draw(&e))?;
        Ok(())
    }
}

/// `0 -> "0%"`, `1 -> "90%"`, `2 -> "99%"`, `3 -> "99.9%"`, ...
fn nines_label(nines: f64) -> String {
    let rounded = nines.round();
    if (nines - rounded).abs() > 1e-9 {
        return String::new();
    }
    match rounded as u32 {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_are_labelled_as_percentiles() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(nines_label(2.5), "");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_row_takes_the_median_of_its_per_round_ratios() {
        let mut row = Row::new(Transport::Uds, 8);
        // Round trips of 200 ns against a probe of 100: ratio 2; then 900 against 300: 3;
        // then 400 against 100: 4. The median ratio is 3, whatever the pooled p50 is.
        row.add(&[200, 200, 200], 100.0).unwrap();
        row.add(&[900, 900, 900], 300.0).unwrap();
        row.add(&[400, 400, 400], 100.0).unwrap();
        assert_eq!(row.round_trips, 9);
        assert_eq!(row.p50_vs_limit, 3.0);
        assert_eq!(row.rounds[1].probe_p50_ns, 150.0);
        assert_eq!(row.rounds[1].p50_ns, 450.0);
        assert!(row.one_way_ns.p50 <= row.one_way_ns.p99);
        assert!(row.one_way_ns.p99 <= row.one_way_ns.max);
        assert_eq!(row.one_way_ns.max, 450.0);
    }
}
