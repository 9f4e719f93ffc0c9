//! Research diagnostic (issue 18): runs the calibrated rule (CPU twin) as
//! `rollcall vote` does and groups the stops by (votes, state): predicted
//! risk at the stop against the realised flips. Also per-question flips.
//! Usage: calib_online FILE DELTA SHUFFLES [budget] [half: a|b]
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rollcall::voting::{cpu, Allocation, ReplayEngine, RuleConfig, StopRule};
use rollcall_cli::replay::{first_seen_majority, parse_vote_file};
use std::collections::BTreeMap;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mut probs = parse_vote_file(&std::fs::read_to_string(&a[1]).unwrap()).unwrap();
    let delta: f32 = a[2].parse().unwrap();
    let shuffles: u64 = a[3].parse().unwrap();
    let budget: u32 = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(40);
    if let Some(h) = a.get(5) { let keep = if h == "a" { 0 } else { 1 }; probs = probs.into_iter().enumerate().filter(|(i, _)| i % 2 == keep).map(|(_, p)| p).collect(); }
    let ids: Vec<Vec<u32>> = probs.iter().map(|p| p.answers.iter().map(|x| p.answers.iter().position(|b| b == x).unwrap() as u32).collect()).collect();
    let config = RuleConfig { rule: StopRule::Calibrated { delta }, min_votes: 2, max_votes: budget };
    let mut by_n: BTreeMap<u32, (f64, f64, f64)> = BTreeMap::new();
    let mut by_state: BTreeMap<Vec<u32>, (f64, f64, f64)> = BTreeMap::new();
    let mut per_q = vec![0u32; ids.len()];
    let (mut samples, mut flips, mut pred) = (0.0, 0.0, 0.0);
    for s in 0..shuffles {
        let sh: Vec<Vec<u32>> = ids.iter().enumerate().map(|(q, l)| { let mut r = ChaCha8Rng::seed_from_u64((s << 32) | q as u64); let mut v = l.clone(); v.shuffle(&mut r); v }).collect();
        let full: Vec<u32> = sh.iter().map(|v| first_seen_majority(&v[..budget as usize]).unwrap()).collect();
        let mut eng = ReplayEngine::new(sh.clone());
        let out = cpu::run(ids.len() as u32, 64, config, Allocation::Chunk(1), &mut eng).unwrap();
        for (q, p) in out.prompts.iter().enumerate() {
            let f = f64::from(p.consensus != full[q]);
            let risk = if p.rollouts >= budget { 0.0 } else { (1.0 - f64::from(p.confidence)).max(0.0) };
            samples += f64::from(p.rollouts); flips += f; pred += risk; per_q[q] += f as u32;
            let e = by_n.entry(p.rollouts).or_insert((0.0, 0.0, 0.0)); e.0 += 1.0; e.1 += risk; e.2 += f;
            let mut t: Vec<(u32, u32)> = vec![];
            for &x in &sh[q][..p.rollouts as usize] { match t.iter_mut().find(|e| e.0 == x) { Some(e) => e.1 += 1, None => t.push((x, 1)) } }
            let e = by_state.entry(t.iter().map(|e| e.1).collect()).or_insert((0.0, 0.0, 0.0)); e.0 += 1.0; e.1 += risk; e.2 += f;
        }
    }
    let tot = shuffles as f64 * ids.len() as f64;
    println!("delta {delta}: samples {:.2} flips {:.3}% predicted {:.3}%  ({} pairs)", samples / tot, 100.0 * flips / tot, 100.0 * pred / tot, tot);
    if std::env::var("DETAIL").is_ok() {
        println!("by votes at stop: n stops mean_risk realised");
        for (n, e) in &by_n { if e.0 > 0.002 * tot { println!("  {n} {} {:.4} {:.4}", e.0, e.1 / e.0, e.2 / e.0); } }
        let mut v: Vec<_> = by_state.iter().collect(); v.sort_by(|x, y| y.1 .2.partial_cmp(&x.1 .2).unwrap());
        println!("states with most flips: state stops mean_risk realised");
        for (k, e) in v.iter().take(12) { println!("  {:?} {} {:.4} {:.4}", k, e.0, e.1 / e.0, e.2 / e.0); }
        let mut qs: Vec<(usize, u32)> = per_q.iter().copied().enumerate().filter(|x| x.1 > 0).collect(); qs.sort_by_key(|x| std::cmp::Reverse(x.1));
        println!("questions with flips (q: flips): {:?}", &qs[..qs.len().min(15)]);
    }
}
