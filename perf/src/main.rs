//! `mbload`: see `perf/README.md`, or `mbload --help`.

use clap::Parser;

fn main() {
    let opts = mbload::Options::parse();
    let json = opts.json;
    let json_out = opts.json_out.clone();
    match mbload::run(opts) {
        Ok(report) => {
            if let Some(path) = &json_out {
                let text = serde_json::to_string_pretty(&report).expect("the report serialises");
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("mbload: {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
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
