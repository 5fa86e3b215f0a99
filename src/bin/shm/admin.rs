//! `shm ls` and `shm clean`: the segments of a directory as an operator needs to see
//! them, and the safe removal of what dead processes left.
//!
//! A file is ours when it starts with the segment magic, never because of its name.
//! Liveness is the kernel's: a role is alive while its OFD lock is held (probed with
//! `F_OFD_GETLK`), never because a pid exists. A file whose header is not ready is
//! being created while its creator holds the creation lock, and stale once nobody does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use shm_transport::alloc::{Error, Kind, Location, Pool, Segment, Survey, SurveyState};
use shm_transport::ring::inspect::{self as ring_inspect, Detail};

/// Arguments of `shm ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The directory to list.
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Print JSON (one object per segment, in an array) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shm clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Segments to consider (names under the directory, or paths with a `/`); all of the
    /// directory's if none.
    names: Vec<String>,
    /// The directory to clean.
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Say what would be done, and do nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Arguments of `shm inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The segment's name under /dev/shm (or a path with a `/`).
    name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shm watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The segments' names under /dev/shm (or paths with a `/`).
    #[arg(required = true)]
    names: Vec<String>,
    /// Seconds between two refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
}

/// One segment as `shm ls --json` prints it.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// The file's name in the directory.
    name: String,
    path: PathBuf,
    /// `ready`, `initialising`, `stale` or `corrupt`.
    state: &'static str,
    /// Why a corrupt one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    kind: Option<&'static str>,
    type_name: Option<String>,
    /// Slots, bytes or chunks, meaning per kind.
    capacity: Option<u64>,
    file_bytes: u64,
    creator_pid: Option<u64>,
    /// Creation time, seconds since the Unix epoch.
    created_unix_s: Option<f64>,
    /// The participant entries (roles) the header lays out.
    roles: Option<u32>,
    /// The roles held now.
    live_roles: Vec<u32>,
    /// Participants alive (their lock held), when the kind's table could be read.
    alive: Option<u32>,
    /// Participants dead: holding their entry with their lock free, not settled yet.
    dead: Option<u32>,
    owner_uid: u32,
}

impl Listed {
    fn of(survey: &Survey, detail: Option<&Detail>) -> Listed {
        let liveness = detail.map(Detail::liveness);
        let (state, reason) = state_words(&survey.state);
        let info = survey.info.as_ref();
        Listed {
            name: survey
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            path: survey.path.clone(),
            state,
            reason,
            kind: info.map(|i| i.kind.name()),
            type_name: info.map(|i| i.type_name.clone()),
            capacity: info.map(|i| i.capacity),
            file_bytes: survey.len,
            creator_pid: info.map(|i| i.creator_pid),
            created_unix_s: info.map(|i| i.created_unix_ns as f64 / 1e9),
            roles: info.map(|i| i.entries.max(2)),
            live_roles: survey.live_roles.clone(),
            alive: liveness.map(|(alive, _)| alive),
            dead: liveness.map(|(_, dead)| dead),
            owner_uid: survey.owner_uid,
        }
    }
}

fn state_words(state: &SurveyState) -> (&'static str, Option<String>) {
    match state {
        SurveyState::Ready => ("ready", None),
        SurveyState::Initialising => ("initialising", None),
        SurveyState::Stale => ("stale", None),
        SurveyState::Corrupt(why) => ("corrupt", Some(why.clone())),
    }
}

/// The surveys of every segment file in `dir` (files that are not segments are left
/// out), by name.
fn surveys(dir: &Path) -> Result<Vec<Survey>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_file() {
            continue;
        }
        // Not ours, gone meanwhile, or unreadable: not listed.
        if let Ok(survey) = Segment::survey(&Location::Path(entry.path())) {
            found.push(survey);
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// `shm ls`.
pub fn ls(args: LsArgs) -> Result<()> {
    let listed: Vec<Listed> = surveys(&args.dir)?
        .iter()
        .map(|survey| {
            // The participants' liveness needs the kind's table: read a ready segment's.
            let found = matches!(survey.state, SurveyState::Ready)
                .then(|| ring_inspect::inspect(&Location::Path(survey.path.clone())).ok())
                .flatten();
            Listed::of(survey, found.as_ref().map(|f| &f.detail))
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<12} {:<9} {:<28} {:>9} {:>10} {:>8} {:>19} participants",
        "NAME", "STATE", "KIND", "TYPE", "CAPACITY", "BYTES", "CREATOR", "CREATED"
    );
    for l in &listed {
        let created = l
            .created_unix_s
            .map(|s| humantime(Duration::from_secs_f64(s)))
            .unwrap_or_default();
        let live = match (l.alive, l.dead) {
            (Some(alive), Some(dead)) => format!("{alive} alive, {dead} dead"),
            _ => format!("{} roles held", l.live_roles.len()),
        };
        println!(
            "{:<32} {:<12} {:<9} {:<28} {:>9} {:>10} {:>8} {:>19} {live}",
            l.name,
            l.state,
            l.kind.unwrap_or("-"),
            l.type_name.as_deref().unwrap_or("-"),
            l.capacity
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            l.file_bytes,
            l.creator_pid
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            created,
        );
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time since the Unix epoch.
fn humantime(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `shm clean`: removes segments whose every role is free and stale creations,
/// reclaims the chunks of dead pool participants, and says what it did and why.
pub fn clean(args: CleanArgs) -> Result<()> {
    let targets: Vec<PathBuf> = if args.names.is_empty() {
        let mut all: Vec<PathBuf> = std::fs::read_dir(&args.dir)
            .with_context(|| format!("reading {}", args.dir.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        all.sort();
        all
    } else {
        args.names
            .iter()
            .map(|n| {
                if n.contains('/') {
                    PathBuf::from(n)
                } else {
                    args.dir.join(n)
                }
            })
            .collect()
    };
    let me = rustix::process::geteuid().as_raw();
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for path in targets {
        let shown = path.display();
        let survey = match Segment::survey(&Location::Path(path.clone())) {
            Ok(survey) => survey,
            Err(Error::BadMagic { .. }) => {
                if !args.names.is_empty() {
                    println!("{shown}: left: not a segment");
                }
                continue;
            }
            Err(e) => {
                println!("{shown}: left: {e}");
                continue;
            }
        };
        if survey.owner_uid != me {
            println!(
                "{shown}: left: owned by uid {}, not this user",
                survey.owner_uid
            );
            continue;
        }
        let why = match (&survey.state, survey.live_roles.as_slice()) {
            (SurveyState::Stale, _) => "a stale creation: its creator died before it was ready",
            (SurveyState::Initialising, _) => {
                println!("{shown}: left: being created");
                continue;
            }
            (SurveyState::Corrupt(reason), _) => {
                println!("{shown}: left: its header does not validate ({reason})");
                continue;
            }
            (SurveyState::Ready, []) => "no live participant",
            (SurveyState::Ready, live) => {
                let pool = survey.info.as_ref().is_some_and(|i| i.kind == Kind::Pool);
                if pool && !args.dry_run {
                    // The dead participants as found before attaching, to say so.
                    let dead = ring_inspect::inspect(&Location::Path(path.clone()))
                        .map_or(0, |found| found.detail.liveness().1);
                    match Pool::builder(Location::Path(path.clone())).open() {
                        Ok(pool) => {
                            // Attaching reclaims the dead participants' chunks; a second
                            // pass catches one that died meanwhile.
                            let again = pool.reclaim_dead()?;
                            println!(
                                "{shown}: left: {} live participant{}; the chunks of dead ones \
                                 are reclaimed ({dead} dead found; {} more chunks just now)",
                                live.len(),
                                if live.len() == 1 { "" } else { "s" },
                                again.chunks
                            );
                        }
                        Err(e) => println!("{shown}: left: {} live participants; {e}", live.len()),
                    }
                } else {
                    println!(
                        "{shown}: left: {} live participant{} (roles {live:?})",
                        live.len(),
                        if live.len() == 1 { "" } else { "s" }
                    );
                }
                continue;
            }
        };
        if !args.dry_run {
            Segment::remove(&Location::Path(path.clone()))
                .with_context(|| format!("removing {shown}"))?;
        }
        println!("{shown}: {verb}: {why}");
    }
    Ok(())
}

/// `shm inspect`: a segment's header, roles, and its flavour's positions and counters.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let location = super::pipe::location(&args.name);
    let found =
        ring_inspect::inspect(&location).with_context(|| format!("inspecting {}", args.name))?;
    let listed = Listed::of(&found.survey, Some(&found.detail));
    let detail = serde_json::to_value(&found.detail)?;
    let mut all = serde_json::to_value(&listed)?;
    all["detail"] = detail;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("{} ({})", listed.name, listed.path.display());
    println!(
        "  {} {}, type {}, capacity {}, {} bytes, created by pid {} at {}",
        listed.state,
        listed.kind.unwrap_or("-"),
        listed.type_name.as_deref().unwrap_or("-"),
        listed
            .capacity
            .map_or_else(|| "-".to_string(), |c| c.to_string()),
        listed.file_bytes,
        listed
            .creator_pid
            .map_or_else(|| "-".to_string(), |p| p.to_string()),
        listed
            .created_unix_s
            .map(|s| humantime(Duration::from_secs_f64(s)))
            .unwrap_or_default(),
    );
    println!(
        "  live roles: {:?}; participants alive {}, dead {}",
        listed.live_roles,
        listed.alive.unwrap_or(0),
        listed.dead.unwrap_or(0)
    );
    if let Some(fields) = all["detail"].as_object() {
        for (key, value) in fields {
            match value.as_array() {
                // One line per participant, subscriber or size class.
                Some(rows) => {
                    let row_name = key.strip_suffix("es").filter(|_| key == "classes");
                    let row_name = row_name.or_else(|| key.strip_suffix('s')).unwrap_or(key);
                    for row in rows {
                        println!("  {row_name} {row}");
                    }
                }
                None => println!("  {key}: {value}"),
            }
        }
    }
    Ok(())
}

/// A ring's positions read at one moment.
type Sample = (std::time::Instant, Vec<(String, u64)>);

/// A ring's positions at one moment, for rates: (name of the position, value).
fn positions(detail: &Detail) -> Vec<(String, u64)> {
    use shm_transport::ring::inspect::Counts;
    // Stalls, parks and wake-ups summed over the participants given.
    let slow = |all: &mut Vec<(String, u64)>, counts: &[Counts]| {
        let sum = |f: fn(&Counts) -> u64| counts.iter().map(f).sum::<u64>();
        all.push(("stalls".into(), sum(|c| c.stalls)));
        all.push(("parks".into(), sum(|c| c.parks)));
        all.push(("wakeups".into(), sum(|c| c.wakeups)));
    };
    match detail {
        Detail::Spsc {
            tail,
            head,
            producer_activity,
            consumer_activity,
            ..
        } => {
            let mut all = vec![("sent".into(), *tail), ("received".into(), *head)];
            slow(&mut all, &[*producer_activity, *consumer_activity]);
            all
        }
        Detail::Mpmc {
            tail,
            head,
            participants,
            ..
        } => {
            let mut all = vec![("sent".into(), *tail), ("received".into(), *head)];
            let counts: Vec<Counts> = participants.iter().map(|p| p.activity).collect();
            slow(&mut all, &counts);
            all
        }
        Detail::Broadcast {
            tail,
            subscribers,
            publisher_activity,
            ..
        } => {
            let mut all = vec![("published".into(), *tail)];
            all.extend(
                subscribers
                    .iter()
                    .map(|s| (format!("sub{}", s.id), s.received)),
            );
            let mut counts = vec![*publisher_activity];
            counts.extend(subscribers.iter().map(|s| s.activity));
            slow(&mut all, &counts);
            all
        }
        Detail::Service { participants } => {
            let clients = participants.iter().filter(|p| p.role == "client");
            vec![
                ("calls".into(), clients.clone().map(|p| p.calls).sum()),
                (
                    "responses".into(),
                    clients.clone().map(|p| p.responses).sum(),
                ),
                ("late".into(), clients.map(|p| p.late).sum()),
            ]
        }
        Detail::Bridge { counts, .. } => vec![
            ("forwarded".into(), counts.forwarded),
            ("dropped".into(), counts.dropped),
            ("refused".into(), counts.refused),
            ("lost".into(), counts.lost),
            ("repeated".into(), counts.repeated),
        ],
        _ => Vec::new(),
    }
}

/// What is waiting in a ring now: queued messages, or each subscriber's lag.
fn backlog(detail: &Detail) -> String {
    match detail {
        Detail::Spsc { queued, .. } | Detail::Mpmc { queued, .. } => format!("queued {queued}"),
        Detail::Broadcast { subscribers, .. } => subscribers
            .iter()
            .map(|s| {
                let dead = if s.alive { "" } else { " (dead)" };
                format!("sub{} lag {}{dead}", s.id, s.lag)
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// `shm watch`: each ring's rates per second, refreshed in place on a terminal (a
/// full-screen table, like `top`), one line per ring and interval otherwise.
pub fn watch(args: WatchArgs) -> Result<()> {
    use std::io::IsTerminal;
    use std::time::Instant;
    anyhow::ensure!(
        args.interval.is_finite() && args.interval > 0.0,
        "--interval must be a positive number of seconds, found {}",
        args.interval
    );
    let interval = Duration::from_secs_f64(args.interval);
    let terminal = std::io::stdout().is_terminal();
    let locations: Vec<(String, Location)> = args
        .names
        .iter()
        .map(|n| (n.clone(), super::pipe::location(n)))
        .collect();
    let read = |loc: &Location| ring_inspect::inspect(loc);
    let mut last: Vec<Option<Sample>> = vec![None; locations.len()];
    let mut refreshes = 0u64;
    loop {
        std::thread::sleep(if refreshes == 0 {
            Duration::ZERO
        } else {
            interval
        });
        let now = Instant::now();
        let mut lines = Vec::new();
        for (i, (name, loc)) in locations.iter().enumerate() {
            let line = match read(loc) {
                Ok(found) => {
                    let current = positions(&found.detail);
                    let rates: Vec<String> = match &last[i] {
                        Some((then, before)) => {
                            let secs = now.duration_since(*then).as_secs_f64().max(1e-9);
                            current
                                .iter()
                                .zip(before)
                                .map(|((what, v), (_, b))| {
                                    format!(
                                        "{what} {:.0}/s ({v})",
                                        v.saturating_sub(*b) as f64 / secs
                                    )
                                })
                                .collect()
                        }
                        None => current
                            .iter()
                            .map(|(what, v)| format!("{what} - ({v})"))
                            .collect(),
                    };
                    last[i] = Some((now, current));
                    format!(
                        "{name}: {} live roles {:?}; {}; {}",
                        state_words(&found.survey.state).0,
                        found.survey.live_roles,
                        rates.join(", "),
                        backlog(&found.detail)
                    )
                }
                Err(e) => format!("{name}: {e}"),
            };
            lines.push(line);
        }
        if terminal {
            // Home, clear the screen: the table refreshed in place.
            print!("\x1b[H\x1b[2J");
            println!(
                "shm watch, every {:.1?} (Ctrl-C to stop); rates per second (totals)",
                interval
            );
            for line in &lines {
                println!("{line}");
            }
        } else {
            let stamp = humantime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            for line in &lines {
                println!("{stamp} {line}");
            }
        }
        refreshes += 1;
        if args.count.is_some_and(|c| refreshes >= c) {
            return Ok(());
        }
    }
}
