//! `berth-shim --id ID --namespace NS --bundle DIR`: see docs/shim.md.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(berth_shim::exec::HELPER_FLAG) {
        // The shim running itself to put an `exec` process into its container.
        std::process::exit(berth_shim::exec::helper_main(&args[1..]));
    }
    let opts = match berth_shim::shim::Options::parse(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    std::process::exit(berth_shim::shim::run(opts));
}
