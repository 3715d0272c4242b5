//! `berth-shim --id ID --namespace NS --bundle DIR` (and `berth-shim delete …` after a shim
//! that died): see docs/shim.md.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(berth_shim::exec::HELPER_FLAG) {
        // The shim running itself to put an `exec` process into its container.
        std::process::exit(berth_shim::exec::helper_main(&args[1..]));
    }
    let delete = args.first().map(String::as_str) == Some(berth_shim::shim::DELETE_COMMAND);
    let args = if delete { args[1..].to_vec() } else { args };
    let opts = match berth_shim::shim::Options::parse(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if delete {
        // After a shim that died: its container's cgroup.
        std::process::exit(berth_shim::shim::delete_after_death(opts));
    }
    std::process::exit(berth_shim::shim::run(opts));
}
