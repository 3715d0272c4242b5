//! `berth-shim --id ID --namespace NS --bundle DIR`: see docs/shim.md.

fn main() {
    let opts = match berth_shim::shim::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    std::process::exit(berth_shim::shim::run(opts));
}
