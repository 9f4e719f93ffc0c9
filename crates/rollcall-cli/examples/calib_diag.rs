//! Research diagnostic for the calibrated rule (issue 18): the model's risk
//! per visited state against the exact finite-population flip frequency.
//! Usage: calib_diag FILE [budget] [prior: oracle|online]
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rollcall::voting::calibrated::{BatchPrior, CalibratedModel, COMPONENTS, component};
use rollcall_cli::replay::{first_seen_majority, parse_vote_file};
use std::collections::HashMap;

fn leader(c: &[u32]) -> usize {
    let mut b = 0;
    for (i, &x) in c.iter().enumerate() {
        if x > c[b] { b = i; }
    }
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let budget: u32 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(40);
    let shuffles: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(400);
    let probs = parse_vote_file(&std::fs::read_to_string(file).unwrap()).unwrap();
    let ids: Vec<Vec<u32>> = probs.iter().map(|p| p.answers.iter().map(|a| p.answers.iter().position(|b| b == a).unwrap() as u32).collect()).collect();
    let mut model = CalibratedModel::new(budget);
    // oracle prior: EM on every question's count vector over a random budget-subset
    let mut full_counts = vec![];
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for l in &ids { let mut v = l.clone(); v.shuffle(&mut rng); let mut t: Vec<(u32,u32)> = vec![];
        for &x in &v[..budget as usize] { match t.iter_mut().find(|e| e.0 == x) { Some(e) => e.1 += 1, None => t.push((x,1)) } }
        full_counts.push(t.iter().map(|e| e.1).collect::<Vec<u32>>()); }
    let mut prior = BatchPrior::default();
    model.refit(&mut prior, full_counts.iter().map(Vec::as_slice), 300);
    let mut marg = std::collections::BTreeMap::new();
    for g in 0..COMPONENTS { let (w, b) = component(g); *marg.entry((w*1000.0) as u32).or_insert(0.0) += prior.weights()[g]; let _ = b; }
    eprintln!("oracle prior, by share: {:?}", marg.iter().map(|(k,v)| format!("{}:{:.3}", *k as f64/1000.0, v)).collect::<Vec<_>>());
    // visited states
    let mut stats: HashMap<Vec<u32>, (f64, f64)> = HashMap::new();
    for s in 0..shuffles {
        for (q, l) in ids.iter().enumerate() {
            let mut r = ChaCha8Rng::seed_from_u64((s << 32) | q as u64 | (1u64 << 62));
            let mut v = l.clone(); v.shuffle(&mut r);
            let v = &v[..budget as usize];
            let full = first_seen_majority(v).unwrap();
            let mut t: Vec<(u32,u32)> = vec![];
            for n in 1..budget as usize {
                let x = v[n-1];
                match t.iter_mut().find(|e| e.0 == x) { Some(e) => e.1 += 1, None => t.push((x,1)) }
                if n < 2 || n > 12 { continue; }
                let c: Vec<u32> = t.iter().map(|e| e.1).collect();
                let li = leader(&c);
                let e = stats.entry(c).or_insert((0.0, 0.0));
                e.0 += 1.0; e.1 += f64::from(t[li].0 != full);
            }
        }
    }
    let bins = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.01];
    let mut acc = vec![(0.0, 0.0, 0.0); bins.len()-1];
    let mut rows = vec![];
    for (c, (cnt, fl)) in &stats {
        let r = model.risk(&prior, c, leader(c));
        let b = bins.iter().position(|&x| r < x).unwrap() - 1;
        acc[b].0 += cnt * r; acc[b].1 += fl; acc[b].2 += cnt;
        rows.push((c.clone(), *cnt, *fl, r));
    }
    println!("bin            visits     mean_risk  realised");
    for (i, a) in acc.iter().enumerate() { if a.2 > 0.0 { println!("[{:.3},{:.3})  {:>9}  {:.4}    {:.4}", bins[i], bins[i+1], a.2, a.0/a.2, a.1/a.2); } }
    rows.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    println!("state  visits  risk  realised  (risk in [0.003, 0.03])");
    for (c, cnt, fl, r) in rows.iter().filter(|x| x.3 >= 0.003 && x.3 <= 0.03).take(25) { println!("{:?} {} {:.4} {:.4}", c, cnt, r, fl / cnt); }
}
