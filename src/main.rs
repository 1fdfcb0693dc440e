fn main() {
    std::process::exit(tgknock::app::main(std::env::args_os().collect()));
}
