//! What only the PostgreSQL store has: a server to reach, migrations that
//! several processes may start at once, a connection pool, a query planner.

use super::{prebuild, Backend, TestStore, DEFAULT, ORG};
use prebuildd::config::{Config, Overrides};
use prebuildd::error::Error;
use prebuildd::store::postgres::{PostgresStore, PostgresUrl};
use std::time::{Duration, Instant};

/// A plain connection to a test database, for looking behind the store.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn open(url: &str) -> Result<PostgresStore, Error> {
    PostgresStore::open(&PostgresUrl::parse(url).expect("url")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_apply_each_migration_once() {
    let url = super::postgres::fresh_database().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { open(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("every process starts");
    }
    let client = connect(&url).await;
    let versions: Vec<i32> =
        client.query("SELECT version FROM schema_migrations ORDER BY version", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6], "one row per migration, applied once");
    open(&url).await.expect("and a later start applies nothing");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let url = super::postgres::fresh_database().await;
    open(&url).await.unwrap();
    connect(&url).await.batch_execute("INSERT INTO schema_migrations (version) VALUES (999)").await.unwrap();
    let error = open(&url).await.unwrap_err().to_string();
    assert!(error.contains("schema version 999, newer than this binary knows"), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_fails_start_naming_the_url_without_its_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgresql://prebuildd:hunter2@127.0.0.1:{port}/prebuildd");
    let data_dir = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npostgres_url = \"{url}\"\n");
    let overrides = Overrides { listen: None, data_dir: Some(data_dir.path().to_path_buf()) };
    let config = Config::parse(&toml, &overrides).expect("valid config");
    let started = Instant::now();
    let error = prebuildd::start(config).await.err().expect("start fails").to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "fails promptly");
    assert!(error.contains(&format!("cannot use PostgreSQL at postgresql://prebuildd@127.0.0.1:{port}/prebuildd")), "{error}");
    assert!(error.contains("refused"), "says why: {error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_missing_database_fails_start_with_what_the_server_said() {
    let url = super::postgres::cluster().url("no_such_database");
    let error = open(&url).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot use PostgreSQL at") && error.contains("no_such_database") && error.contains("does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn dropped_connections_are_unavailable_then_replaced() {
    let t = TestStore::open(Backend::Postgres).await;
    let p = prebuild(DEFAULT);
    t.store.insert_prebuild(p.clone()).await.unwrap();
    // The server ends every session of the store's database (a restart, a
    // failover, an administrator).
    let admin = connect(&super::postgres::cluster().url("postgres")).await;
    let database = t.postgres_url().unwrap().rsplit('/').next().unwrap().to_string();
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&database])
        .await
        .unwrap();
    let mut failures = 0;
    loop {
        match t.store.get_prebuild(ORG, &p.id).await {
            Ok(found) => {
                assert_eq!(found, Some(p));
                break;
            }
            Err(Error::Unavailable(_)) if failures < 20 => failures += 1,
            Err(other) => panic!("a dropped connection must be unavailable (retry), got {other:?}"),
        }
    }
}

/// With a table big enough for the planner to care (100 organizations),
/// each filter's page is read through that filter's index (the same one
/// SQLite uses, or one the planner finds as good), never by a table scan.
#[tokio::test]
async fn pages_are_read_through_their_filters_index() {
    let t = TestStore::open(Backend::Postgres).await;
    let client = connect(t.postgres_url().unwrap()).await;
    client
        .batch_execute(
            "INSERT INTO prebuilds (id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, version, body, finished_at)
             SELECT 'p' || i, 'org' || (i % 100), 'project' || (i / 100 % 47), 'class' || (i / 100 % 3), 10 * (1 + i / 100 % 8),
                    1 + i / 100 % 2, 'creator' || (i / 100 % 41), 'executor' || (i / 100 % 31), 1, '\\x00',
                    CASE WHEN i / 100 % 8 >= 5 THEN i END
             FROM generate_series(1, 20000) AS i;
             INSERT INTO warm_pools (id, organization_id, project_id, environment_class_id, version, body)
             SELECT 'w' || i, 'org' || (i % 100), 'project' || i, 'class' || (i / 100 % 3), 1, '\\x00' FROM generate_series(1, 5000) AS i;
             ANALYZE prebuilds; ANALYZE warm_pools;",
        )
        .await
        .unwrap();
    let page = "ORDER BY seq DESC LIMIT 26";
    let cases: [(String, &[&str]); 10] = [
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' {page}"), &["prebuilds_by_organization"]),
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND project_id = 'project6' {page}"), &["prebuilds_by_project"]),
        (
            format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND creator_id = 'creator6' AND seq < 10000 {page}"),
            &["prebuilds_by_creator"],
        ),
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND executor_id = 'executor6' {page}"), &["prebuilds_by_executor"]),
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND phase = 60 {page}"), &["prebuilds_by_phase", "prebuilds_completed_by_pair"]),
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND phase = 10 {page}"), &["prebuilds_by_phase", "prebuilds_active"]),
        (format!("SELECT seq, body FROM prebuilds WHERE organization_id = 'org1' AND triggered_by = 2 {page}"), &["prebuilds_by_trigger", "prebuilds_by_organization"]),
        ("SELECT body FROM prebuilds WHERE phase NOT IN (60, 70, 80) ORDER BY seq LIMIT 100".into(), &["prebuilds_active"]),
        (
            "SELECT id FROM prebuilds WHERE organization_id = 'org1' AND project_id = 'project6' AND environment_class_id = 'class0' AND phase = 60 ORDER BY seq DESC LIMIT 1".into(),
            &["prebuilds_completed_by_pair"],
        ),
        (format!("SELECT seq, body FROM warm_pools WHERE organization_id = 'org1' AND environment_class_id = 'class1' {page}"), &["warm_pools_by_class"]),
    ];
    for (sql, indexes) in cases {
        let plan: Vec<String> =
            client.query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
        // "Index Scan Backward using <index> on prebuilds", "Bitmap Index Scan on <index>".
        let used = plan
            .iter()
            .any(|line| indexes.iter().any(|index| line.contains(&format!(" using {index} ")) || line.ends_with(&format!(" on {index}"))));
        let plan = plan.join("\n");
        assert!(used && !plan.contains("Seq Scan"), "{sql}\nexpected one of {indexes:?}:\n{plan}");
    }
}

#[tokio::test]
async fn the_token_secret_is_made_once_and_shared() {
    let url = super::postgres::fresh_database().await;
    let (one, two) = (open(&url).await.unwrap(), open(&url).await.unwrap());
    let (a, b) = tokio::join!(one.shared_token_secret(), two.shared_token_secret());
    let secret = a.unwrap();
    assert_eq!(secret, b.unwrap());
    assert_eq!(one.shared_token_secret().await.unwrap(), secret, "read back, not made again");
}

#[tokio::test]
async fn the_reconciler_lease_has_one_holder_and_a_new_term_per_change_of_hands() {
    let url = super::postgres::fresh_database().await;
    let store = open(&url).await.unwrap();
    let long = Duration::from_secs(30);
    assert_eq!(store.acquire_lease("a", long).await.unwrap(), Some(1), "free: taken");
    assert_eq!(store.acquire_lease("a", long).await.unwrap(), Some(1), "renewed in the same term");
    assert_eq!(store.acquire_lease("b", long).await.unwrap(), None, "held by another");
    store.release_lease("b").await.unwrap();
    assert_eq!(store.acquire_lease("b", long).await.unwrap(), None, "only the holder releases");
    store.release_lease("a").await.unwrap();
    assert_eq!(store.acquire_lease("b", Duration::from_millis(100)).await.unwrap(), Some(2), "released: taken in a new term");
    assert_eq!(store.acquire_lease("a", long).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.acquire_lease("a", long).await.unwrap(), Some(3), "expired: taken in a new term");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The same holder coming back after its lease ran out also gets a new term.
    assert_eq!(store.acquire_lease("a", Duration::from_millis(50)).await.unwrap(), Some(3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.acquire_lease("a", long).await.unwrap(), Some(4));
}
