//! Benchmark helper for `download_verify_512mib`: downloads one artifact with
//! the agent's download code (Range resume, size cap, SHA-256 on a second
//! thread, fsync + rename) into a directory, as a pass would.
//!
//! Usage: `download URL SHA256 SIZE DIR`; prints the verified file's path,
//! and on stderr `transfer_s=<s> sync_s=<s>`: the time until the last byte
//! was written and hashed, and the time the fsyncs and rename took after it.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, sha, size, dir] = &args[..] else {
        anyhow::bail!("usage: download URL SHA256 SIZE DIR");
    };
    let url = url::Url::parse(url)?;
    let http = flotilla_agent::http::client(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(30),
    )?;
    let dir = std::path::PathBuf::from(dir);
    let (path, phases) = flotilla_agent::download::fetch_timed(
        &http,
        &flotilla_agent::download::Request {
            url: &url,
            sha256: sha,
            size: size.parse()?,
            dir: &dir,
            min_rate: flotilla_agent::http::MinRate::OFF,
        },
    )?;
    println!("{}", path.display());
    eprintln!(
        "transfer_s={:.3} sync_s={:.3}",
        phases.transfer.as_secs_f64(),
        phases.sync.as_secs_f64()
    );
    Ok(())
}
