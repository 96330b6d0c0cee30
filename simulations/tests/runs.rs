//! Whole runs of the shipped scenarios (shortened): determinism, conservation of tokens
//! and payments, and the adversarial scenario's detection rate.

use std::path::{Path, PathBuf};

use cocoon_sim::run::{RunOptions, run_to_dir, simulate};
use cocoon_sim::scenario::Scenario;

fn scenario(name: &str, duration_s: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path)
        .expect("shipped scenario loads")
        .with_param("duration_s", duration_s)
        .expect("duration override")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cocoon-sim-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every output file's bytes, with the wall-clock parts of summary.json removed.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("output dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let mut bytes = std::fs::read(&p).expect("readable");
            if name == "summary.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                let o = v.as_object_mut().expect("object");
                assert!(o.remove("wall_seconds").is_some());
                assert!(o.remove("timing").is_some());
                bytes = serde_json::to_vec_pretty(&v).expect("json");
            }
            (name, bytes)
        })
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    for (file, dur) in [("tiny.toml", "600"), ("mesh-1k.toml", "300")] {
        let sc = scenario(file, dur);
        let opts = RunOptions { plots: false };
        let (a, b, c) = (temp("det-a"), temp("det-b"), temp("det-c"));
        run_to_dir(&sc, 7, &a, opts, |_, _| {}).expect("run a");
        run_to_dir(&sc, 7, &b, opts, |_, _| {}).expect("run b");
        run_to_dir(&sc, 8, &c, opts, |_, _| {}).expect("run c");
        let (oa, ob, oc) = (outputs(&a), outputs(&b), outputs(&c));
        assert_eq!(oa.len(), 5, "{file}: 4 CSVs and summary.json");
        for (x, y) in oa.iter().zip(&ob) {
            assert_eq!(x.0, y.0);
            assert!(
                x.1 == y.1,
                "{file}: {} differs between two runs of seed 7",
                x.0
            );
        }
        let req = |o: &[(String, Vec<u8>)]| {
            o.iter()
                .find(|f| f.0 == "requests.csv")
                .map(|f| f.1.clone())
        };
        assert_ne!(
            req(&oa),
            req(&oc),
            "{file}: seed 8 gives the same requests as seed 7"
        );
        for d in [a, b, c] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn tokens_and_payments_are_conserved() {
    let sc = scenario("mesh-1k.toml", "600");
    let (sim, s) = simulate(&sc, 3, |_, _| {}).expect("runs");
    // Tokens: requested = served + failed, in the summary and row by row.
    assert!(s.requests.arrived > 500, "{}", s.requests.arrived);
    assert_eq!(s.tokens.requested, s.tokens.served + s.tokens.failed);
    let rows = &sim.rec.requests;
    assert_eq!(rows.len() as u64, s.requests.arrived);
    let req: u64 = rows.iter().map(|r| r.output_tokens).sum();
    let served: u64 = rows.iter().map(|r| r.served_tokens).sum();
    assert_eq!(req, s.tokens.requested);
    assert_eq!(served, s.tokens.served);
    assert!(rows.iter().all(|r| r.served_tokens <= r.output_tokens));
    assert!(s.failover.failovers > 0, "churn makes failovers");
    // Payments: what clients signed = what workers accepted = the price of what was served.
    let p = &s.payments;
    assert!(p.paid_by_clients_nanoton > 0);
    assert_eq!(p.paid_by_clients_nanoton, p.earned_by_workers_nanoton);
    assert_eq!(p.paid_by_clients_nanoton, p.owed_for_served_nanoton);
    // And, independently, from each worker's counted tokens at its tier's prices (no
    // adversaries here, so every served token is paid).
    let mut expected = 0u128;
    let mut earned = 0u128;
    for w in &sim.rec.workers {
        let tier = sc
            .workers
            .tiers
            .iter()
            .find(|t| t.name == w.tier)
            .expect("tier");
        expected += u128::from(w.prompt_tokens) * u128::from(tier.price_prompt)
            + u128::from(w.completion_tokens) * u128::from(tier.price_completion);
        earned += w.earned_nanoton;
    }
    assert_eq!(earned, p.earned_by_workers_nanoton);
    assert_eq!(expected, earned);
}

#[test]
fn cheaters_are_caught_at_the_spot_check_rate_and_routed_around() {
    let sc = scenario("adversarial.toml", "900");
    let (_, s) = simulate(&sc, 5, |_, _| {}).expect("runs");
    let a = &s.adversary;
    let q = sc.client.spot_check;
    let n = a.wrong_segments as f64;
    assert!(n > 300.0, "enough segments through cheaters: {n}");
    let sigma = (q * (1.0 - q) / n).sqrt();
    assert!(
        (a.detection_rate - q).abs() < 4.0 * sigma,
        "detected {} of {} = {:.3}, predicted {q} ± {:.3}",
        a.wrong_detected,
        a.wrong_segments,
        a.detection_rate,
        4.0 * sigma
    );
    // A detected cheater is banned at once by that client and never routed through
    // while the ban lasts.
    assert!(s.failover.by_fault.wrong_result > 0);
    assert!(s.failover.bans >= s.failover.by_fault.wrong_result);
    assert_eq!(a.routed_through_banned, 0);
    // Stallers are timed out and routed around; vanishers cost disconnects.
    assert!(s.failover.by_fault.stalled > 0);
    assert!(s.failover.by_fault.disconnected > 0);
    // Payments still balance with unpaid wrong results in the mix.
    assert_eq!(
        s.payments.paid_by_clients_nanoton,
        s.payments.earned_by_workers_nanoton
    );
    assert_eq!(s.tokens.requested, s.tokens.served + s.tokens.failed);
}

#[test]
fn plots_come_as_png_and_svg_when_a_font_exists() {
    let sc = scenario("tiny.toml", "300");
    let dir = temp("plots");
    run_to_dir(&sc, 1, &dir, RunOptions { plots: true }, |_, _| {}).expect("runs");
    let names = [
        "latency_cdf",
        "tokens_per_s",
        "failovers",
        "earnings",
        "propagation",
    ];
    let font = std::env::var_os("COCOON_SIM_FONT").is_some()
        || Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists();
    for n in names {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("{n}.{ext}"));
            assert_eq!(p.exists(), font, "{}", p.display());
            if font {
                assert!(std::fs::metadata(&p).expect("file").len() > 1000);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
