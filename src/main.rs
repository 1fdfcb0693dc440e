fn main() {
    std::process::exit(tgknock::cli::app::main(std::env::args_os().collect()));
}
