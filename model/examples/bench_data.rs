//! Write the criterion benchmarks' data as raw little-endian f64, for
//! `bench/python/compare.py` to time scikit-learn and RDT on the very same values:
//!
//! ```sh
//! cargo run --release -p shardflow-model --example bench_data -- /tmp/amounts.f64 10000000
//! ```

#[path = "../benches/data/mod.rs"]
mod data;

use std::io::Write;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "amounts.f64".into());
    let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for v in data::amounts(n) {
        out.write_all(&v.to_le_bytes())?;
    }
    out.flush()?;
    println!("wrote {n} values to {path}");
    Ok(())
}
