//! Logs go to stderr through `tracing`; `NOREGRET_LOG` (or `RUST_LOG`) sets the filter.

pub fn init() {
    let filter = std::env::var("NOREGRET_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}
