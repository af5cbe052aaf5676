//! `mbload`: see `perf/README.md`, or `mbload --help`.

use clap::Parser;

fn main() {
    let opts = mbload::Options::parse();
    let json = opts.json;
    match mbload::run(opts) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("the report serialises"));
            } else {
                print!("{}", report.human());
            }
        }
        Err(e) => {
            eprintln!("mbload: {e}");
            std::process::exit(1);
        }
    }
}
