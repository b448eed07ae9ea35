//! What a session left running for hours relies on, tried on a short one:
//! a slow leak among fast churn (testprogs/slow_leak: one socket every
//! 100 ms, about 4,000 opens and closes a second), `continue --every`
//! printing one tick per period, `leaks --older` keeping only the slow
//! site's older fds with its true rate, and a window of events smaller
//! than the session: `history` says what it no longer has, `stats` what
//! fdbg holds.

use serial_test::serial;

use crate::harness::{
    Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers, fdbg_batch, num,
};
use crate::testprogs::{ChildGuard, open_fds, testprog};

/// The leak's period, and the session's: 3 s with a tick every 500 ms.
const PERIOD_MS: i64 = 100;
const TICKS: usize = 6;
/// Events kept: far fewer than the session makes.
const KEPT: i64 = 200;

#[test]
#[serial]
fn a_slow_leak_among_churn_ticks_ages_and_a_bounded_window() {
    let _watchdog = Watchdog::new("slow_leak", TEST_LIMIT);
    let mut program = ChildGuard::spawn(
        std::process::Command::new(testprog("slow_leak")).arg(PERIOD_MS.to_string()),
    );
    let pid = program.pid();
    let mut output = program.output();
    let rate = output.wait_for("rate");
    let leak = output.wait_for("leak");
    let true_per_min: f64 = rate.get("per_min").unwrap().parse().unwrap();
    let out = fdbg_batch([
        "attach",
        &pid.to_string(),
        "--batch",
        "--json",
        "--keep-events",
        &KEPT.to_string(),
        "-e",
        "continue 3s --every 500ms",
        "-e",
        "leaks --older 1s",
        "-e",
        "fds",
        "-e",
        "stats",
        "-e",
        &format!("history {}", leak.fd()),
    ]);
    out.assert_success();
    assert_untraced_and_running(pid, &out);

    // One tick per period, the last at the end of the `continue`.
    let ticks: Vec<&serde_json::Value> = out.docs.iter().filter_map(|d| d.get("tick")).collect();
    assert_eq!(ticks.len(), TICKS, "{out}");
    let elapsed: Vec<f64> = ticks
        .iter()
        .map(|t| t["elapsed_s"].as_f64().unwrap())
        .collect();
    assert!(
        elapsed.windows(2).all(|w| w[0] < w[1]),
        "{elapsed:?}\n{out}"
    );
    // Each tick counts what was open then: the leaks due by its time,
    // give or take the one in flight and the churn's one fd.
    let per_tick = 500 / PERIOD_MS;
    for tick in &ticks {
        let delta = num(tick, "delta");
        assert!(
            (per_tick - 2..=per_tick + 2).contains(&delta),
            "a tick's change is the leaks of its period: {tick}\n{out}"
        );
        let sites = tick["sites"].as_array().unwrap();
        assert_eq!(sites[0]["frames"][0]["function"], "report_metric", "{tick}");
    }
    let fds = out.first(Shape::Fds);
    let last = ticks.last().unwrap();
    assert!(
        (num(last, "open_fds") - num(fds, "open_fds")).abs() <= 2,
        "the last tick and the stop agree within the events between: {last}\n{fds}"
    );

    // `leaks --older 1s`: the slow site only, every fd older than a
    // second, at the program's rate.
    let leaks = out.first(Shape::Leaks);
    let sites = leaks["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "only the slow site is that old: {leaks}");
    let site = &sites[0];
    assert_eq!(site["site"], 1);
    assert_eq!(site["frames"][0]["function"], leak.get("fn").unwrap());
    let line = format!(
        "{}:{}",
        site["frames"][0]["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap(),
        site["frames"][0]["line"]
    );
    assert_eq!(line, leak.get("site").unwrap(), "{site}");
    assert!(site["newest_age_s"].as_f64().unwrap() >= 1.0, "{site}");
    assert!(site["oldest_age_s"].as_f64().unwrap() <= 3.5, "{site}");
    let count = num(site, "count");
    assert!((15..=25).contains(&count), "about 2 s of leaks: {site}");
    let per_min = site["per_min"].as_f64().unwrap();
    assert!(
        (per_min - true_per_min).abs() <= true_per_min * 0.1,
        "rate {per_min}/min, the program's {true_per_min}/min\n{site}"
    );
    assert_eq!(leaks["older_than_s"], 1.0);

    // The model matched /proc at the stop with a window of 200 events.
    let stats = out.first(Shape::Stats);
    assert_eq!(
        (num(stats, "adopted"), num(stats, "dropped")),
        (0, 0),
        "{stats}"
    );
    let memory = &stats["memory"];
    assert_eq!(num(memory, "events_kept"), KEPT, "{stats}");
    let total = num(stats, "total_events");
    assert_eq!(num(memory, "events_forgotten"), total - KEPT, "{stats}");
    assert!(num(memory, "rss_bytes") > 0, "{stats}");
    assert!(
        (1..=num(memory, "rss_bytes")).contains(&num(memory, "pss_bytes")),
        "{stats}"
    );
    assert_eq!(fd_numbers(fds).len() as i64, num(fds, "open_fds"));
    let series = stats["open_fds_over_time"].as_array().unwrap();
    assert!(series.len() >= 2 && series.len() <= 512, "{stats}");
    let last_point = series.last().unwrap();
    assert_eq!(
        last_point[1].as_i64(),
        Some(num(fds, "open_fds")),
        "{stats}"
    );

    // The leaked fd's creation is older than the window: history says so.
    let history = out.first(Shape::History);
    assert!(
        num(history, "events_forgotten") >= total - KEPT,
        "{history}"
    );
    let first_kept = total - KEPT + 1;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| num(e, "seq") >= first_kept),
        "{history}"
    );
    assert!(open_fds(pid).contains_key(&leak.fd()));
}
