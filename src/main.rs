mod cli;
use clap::Parser;
fn main() {
    let c = cli::Cli::parse();
    println!("{c:#?}");
}
