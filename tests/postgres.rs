//! Tests: stock `psql` and `pgbench` through a `tunnel tcp` listener, against a real
//! PostgreSQL cluster behind a real `tunnel edge`.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::postgres::Postgres;
use crate::support::proc::output_with_timeout;
use crate::support::{CI_TOKEN, Edge, Proc, tunnel_tcp};

/// Limit for one `psql` run.
const PSQL_LIMIT: Duration = Duration::from_secs(60);
/// Limit for one `pgbench` run (initialisation or the bounded benchmark).
const PGBENCH_LIMIT: Duration = Duration::from_secs(180);

/// Edge with app `db.test` leading to `pg`, and a `tunnel tcp` listener for it.
fn tunnel_to(pg: &Postgres) -> (Edge, Proc, SocketAddr) {
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        pg.addr()
    ));
    let (tcp, listen) = tunnel_tcp(
        &edge,
        "http://db.test",
        &["--id", "ci.access", "--secret", "s3cret"],
    );
    (edge, tcp, listen)
}

/// Run `cmd` under `limit`; panic with its output and the tunnel's stderr on failure.
fn run_ok(what: &str, cmd: Command, limit: Duration, procs: &[&Proc]) -> Output {
    let out = output_with_timeout(cmd, limit);
    if !out.status.success() {
        let logs: Vec<String> = procs.iter().map(|p| p.stderr()).collect();
        panic!(
            "{what} failed ({})\nstdout: {}\nstderr: {}\n--- tunnel stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            logs.join("\n---\n")
        );
    }
    out
}

/// `psql -Atc sql` against `addr`; returns trimmed stdout.
fn query(pg: &Postgres, addr: SocketAddr, sql: &str, procs: &[&Proc]) -> String {
    let mut cmd = pg.psql(addr);
    cmd.args(["-Atc", sql]);
    let out = run_ok(&format!("psql {sql:?}"), cmd, PSQL_LIMIT, procs);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fixture itself: psql straight to the cluster (no tunnel), so a failure here
/// points at the machine's PostgreSQL rather than at `tunnel`.
#[test]
fn postgres_fixture_accepts_direct_psql() {
    let pg = Postgres::start();
    assert_eq!(query(&pg, pg.addr(), "select 40+2", &[]), "42");
}

#[test]
fn psql_queries_through_tunnel_tcp() {
    let pg = Postgres::start();
    let (edge, tcp, listen) = tunnel_to(&pg);
    let procs = [&tcp, &edge.proc];
    assert_eq!(query(&pg, listen, "select 40+2", &procs), "42");
    query(
        &pg,
        listen,
        "create table notes (id int primary key, body text not null)",
        &procs,
    );
    query(
        &pg,
        listen,
        "insert into notes values (1, 'one'), (2, 'two'), (3, repeat('x', 100000))",
        &procs,
    );
    assert_eq!(
        query(
            &pg,
            listen,
            "select id || ':' || length(body) from notes order by id",
            &procs
        ),
        "1:3\n2:3\n3:100000"
    );
}

#[test]
fn pgbench_through_tunnel_tcp() {
    let pg = Postgres::start();
    let (edge, tcp, listen) = tunnel_to(&pg);
    let procs = [&tcp, &edge.proc];

    let mut init = pg.pgbench(listen);
    init.args(["-i", "-q", "-s", "1", "postgres"]);
    run_ok("pgbench -i", init, PGBENCH_LIMIT, &procs);

    let mut bench = pg.pgbench(listen);
    bench.args(["-c", "4", "-j", "2", "-T", "3", "-n", "postgres"]);
    let out = run_ok("pgbench -c 4 -j 2 -T 3", bench, PGBENCH_LIMIT, &procs);
    let report = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '/').next())
            .and_then(|n| n.parse().ok())
    };
    let processed = field("number of transactions actually processed: ")
        .unwrap_or_else(|| panic!("no transaction count in pgbench report:\n{report}"));
    assert!(processed > 0, "pgbench processed nothing:\n{report}");
    // PostgreSQL 15+ reports failures; older pgbench aborts on any failure instead.
    if let Some(failed) = field("number of failed transactions: ") {
        assert_eq!(failed, 0, "pgbench reported failures:\n{report}");
    }
}
