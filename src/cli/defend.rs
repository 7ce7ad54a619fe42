//! `rvpt defend`: the same job as `cargo run --example defend`.

pub fn run(args: rvpt::defend::DefendArgs) -> rvpt::Result<()> {
    rvpt::defend::run(&args).map(|_| ())
}
