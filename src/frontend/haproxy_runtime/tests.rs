use std::path::Path;
use std::time::Duration;

use super::plan::{changed_servers, plan};
use super::*;
use crate::frontend::{ChangedFile, haproxy_file};

/// The snapshots were recorded when these tests lived in `frontend/haproxy_runtime.rs`; they stay
/// in `frontend/snapshots` under their names, so that splitting the file changes none of them.
fn snapshots_in_frontend_dir() -> impl Drop {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.bind_to_scope()
}

const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
    3 web 1 web_s1 127.0.0.2 2 0 1 1 1 8 2 0 6 0 0 0 - 8080 - 0 0 - - 0\n\
    3 web 2 web_s2 0.0.0.0 0 5 1 1 1 1 0 0 14 0 0 0 - 0 - 0 0 - - 0\n\n";

fn socket() -> RuntimeSocket {
    RuntimeSocket::Unix("/run/haproxy/admin.sock".into())
}

#[test]
fn servers_state_is_read_by_column_name() {
    let live = parse_servers_state(STATE).unwrap();
    assert_eq!(
        live[1],
        LiveServer {
            name: "web_s2".into(),
            address: "0.0.0.0".into(),
            port: 0,
            admin: 5,
            weight: 1
        }
    );
    assert!(parse_servers_state("Can't find backend.\n").is_none());
}

fn commands(file: &str) -> Result<Vec<String>, String> {
    let section = haproxy_file::parse(file).backends.remove(0);
    let live = parse_servers_state(STATE).unwrap();
    plan(&socket(), &section, &live)
        .map(|steps| steps.into_iter().flat_map(|s| s.commands).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn plans_fill_move_empty_and_reweigh_slots() {
    let _snapshots = snapshots_in_frontend_dir();
    assert_eq!(
        commands(
            "backend web\n server web_s1 127.0.0.2:8080 weight 1\n server web_s2 0.0.0.0:0 disabled\n"
        ),
        Ok(vec![])
    );
    insta::assert_debug_snapshot!(commands(
        "backend web\n server web_s1 127.0.0.3:8080 weight 4\n server web_s2 [::1]:81 weight 2\n"
    ));
    insta::assert_debug_snapshot!(commands(
        "backend web\n server web_s1 0.0.0.0:0 disabled\n server web_s2 0.0.0.0:0 disabled\n"
    ));
}

#[test]
fn plan_errors_name_the_server() {
    let _snapshots = snapshots_in_frontend_dir();
    insta::assert_snapshot!(
        commands(
            "backend web\n server web_s1 app.internal:80\n server web_s2 0.0.0.0:0 disabled\n"
        )
        .unwrap_err()
    );
    insta::assert_snapshot!(commands("backend web\n server web_s9 127.0.0.1:80\n").unwrap_err());
}

#[test]
fn only_address_weight_and_state_changes_are_made_in_place() {
    let _snapshots = snapshots_in_frontend_dir();
    let old = "backend web\n server web_s1 127.0.0.2:80\n server web_s2 0.0.0.0:0 disabled\n";
    let check = |new: &str, previous: Option<&str>| {
        changed_servers(&ChangedFile {
            path: Path::new("/etc/haproxy/web.cfg"),
            previous: previous.map(str::as_bytes),
            content: new,
        })
        .map(|b| b.len())
        .map_err(|e| e.to_string())
    };
    let moved = old.replace("127.0.0.2:80", "127.0.0.3:81 weight 5");
    assert_eq!(check(&moved, Some(old)), Ok(1));
    insta::assert_snapshot!(
        [
            check(old, None).unwrap_err(),
            check(
                &format!("{old} server web_s3 0.0.0.0:0 disabled\n"),
                Some(old)
            )
            .unwrap_err(),
            check(
                "backend web\n server web_s1 127.0.0.2:80\n server web_s2 127.0.0.3:80\n server web_s3 0.0.0.0:0 disabled\n",
                Some("backend web\n server web_127_0_0_2_80 127.0.0.2:80\n server web_127_0_0_3_80 127.0.0.3:80\n")
            )
            .unwrap_err(),
            check(
                &old.replace("backend web", "backend web\n balance first"),
                Some(old)
            )
            .unwrap_err(),
            check(
                &old.replace("web_s", "web;s"),
                Some(&old.replace("web_s", "web;s"))
            )
            .unwrap_err(),
        ]
        .join("\n")
    );
}

#[test]
fn sockets_parse_as_paths_or_tcp_addresses() {
    assert_eq!(
        RuntimeSocket::parse("/run/haproxy/admin.sock").unwrap(),
        RuntimeSocket::Unix("/run/haproxy/admin.sock".into())
    );
    assert_eq!(
        RuntimeSocket::parse("127.0.0.1:9999").unwrap(),
        RuntimeSocket::Tcp("127.0.0.1:9999".into())
    );
    assert_eq!(
        RuntimeSocket::parse("[::1]:9999").unwrap(),
        RuntimeSocket::Tcp("[::1]:9999".into())
    );
    assert_eq!(
        RuntimeSocket::parse("unix@run/a:1").unwrap(),
        RuntimeSocket::Unix("run/a:1".into())
    );
    assert!(RuntimeSocket::parse(" ").is_err());
}

#[tokio::test]
async fn an_unreachable_socket_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = RuntimeSocket::Unix(dir.path().join("nope.sock"));
    let err = RuntimeClient::new(&socket, Duration::from_secs(1))
        .send("show info")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.sock") && err.contains("cannot connect"),
        "{err}"
    );
}
