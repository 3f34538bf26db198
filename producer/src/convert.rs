//! `producer convert`: SQL over one file, the result written in any format or shown.

use anyhow::bail;
use shardflow_config::Config;
use shardflow_query::{Input, Session, Sink, parse_bytes};
use shardflow_storage::objects::Patience;

/// What `producer convert` was asked.
pub(crate) struct Convert {
    pub(crate) input: String,
    pub(crate) output: Option<String>,
    pub(crate) sql: String,
    pub(crate) format: Option<String>,
    pub(crate) input_format: Option<String>,
    pub(crate) delimiter: Option<String>,
    pub(crate) no_header: bool,
    pub(crate) show: Option<usize>,
    pub(crate) memory_limit: String,
}

/// Rows shown when there is no output and `--show` is not given.
const SHOWN_BY_DEFAULT: usize = 20;

/// Run the query, stream its result to the output, print the rows asked for on stdout
/// and a summary on stderr.
pub(crate) async fn convert(config: &Config, args: Convert) -> anyhow::Result<()> {
    let memory_limit = parse_bytes(&args.memory_limit).map_err(anyhow::Error::msg)?;
    let mut input = Input::new(&args.input, args.input_format.as_deref())?;
    input.header = !args.no_header;
    if let Some(delimiter) = &args.delimiter {
        input.delimiter = delimiter_byte(delimiter)?;
    }
    let sink = args.output.as_deref().map(|output| Sink::new(output, args.format.as_deref())).transpose()?;
    if sink.is_none() && args.format.is_some() {
        bail!("--format names the output's format: give --output too");
    }
    let show = args.show.unwrap_or(if sink.is_none() { SHOWN_BY_DEFAULT } else { 0 });
    let options = config.storage.options();
    let session = Session::open(&input, &options, Patience::Command, Some(memory_limit)).await?;
    let started = std::time::Instant::now();
    let ran = session.run(&args.sql, sink.as_ref(), show, &options).await?;
    print!("{}", ran.table()?);
    if show > 0 {
        println!();
    }
    if let Some(sink) = &sink {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("wrote {} rows to {} ({}) in {seconds:.1} s", ran.rows, sink.named(), sink.format());
    }
    Ok(())
}

/// `--delimiter`: one ASCII character, or `tab` / `\t`.
fn delimiter_byte(given: &str) -> anyhow::Result<u8> {
    match given {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        one if one.len() == 1 && one.is_ascii() => Ok(one.as_bytes()[0]),
        _ => bail!("--delimiter takes one ASCII character (or `tab`), not {given:?}"),
    }
}
