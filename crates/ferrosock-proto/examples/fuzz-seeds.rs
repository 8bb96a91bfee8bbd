//! Writes each fuzz target's seed corpus (`ferrosock_proto::fuzz::seeds`) into DIR/TARGET/:
//! `cargo run -p ferrosock-proto --features fuzz --example fuzz-seeds -- DIR`. `scripts/fuzz` runs it before fuzzing.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds DIR");
        std::process::exit(2);
    };
    for target in ferrosock_proto::fuzz::TARGETS {
        let corpus = dir.join(target);
        std::fs::create_dir_all(&corpus)?;
        for (n, seed) in ferrosock_proto::fuzz::seeds(target).iter().enumerate() {
            std::fs::write(corpus.join(format!("seed-{n}")), seed)?;
        }
    }
    Ok(())
}
