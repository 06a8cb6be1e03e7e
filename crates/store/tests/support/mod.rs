//! What the store's test binaries share: the suite's PostgreSQL server and fresh databases on it.

/// The PostgreSQL server of `CTR_TEST_POSTGRES_URL` (guide: Tests). CI must say: a URL, or
/// empty for its SQLite-only run (whose PostgreSQL-only tests, named `postgres_`, it skips);
/// unset there fails instead of skipping.
pub fn postgres() -> Option<String> {
    match std::env::var("CTR_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        Ok(_) => None,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI runs the PostgreSQL store tests: set CTR_TEST_POSTGRES_URL")
        }
        _ => None,
    }
}

/// A fresh database on the server of `admin`, named for `purpose`; answers its URL.
pub async fn fresh_database(admin: &str, purpose: &str) -> String {
    let name = format!(
        "ctr_store_{purpose}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    ctr_store::execute_once(admin, &format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (server, _) = admin.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}
