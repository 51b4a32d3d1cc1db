//! Reading the `server` lines of an HAProxy config file that elasticd wrote.
//!
//! Two users: slot assignment reads the installed file to keep every backend in the slot it had
//! (the file always matches the live state), and the `haproxy_runtime` reload action reads the
//! old and new files to decide whether the change is one the Runtime API can make in place.
//! This is not a general HAProxy parser: it knows sections, `server` lines, and comments.

use std::net::IpAddr;

/// One `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The server name (`web_s3`).
    pub name: String,
    /// The address as written, without brackets (`127.0.0.2`, `::1`, `app.internal`).
    pub address: String,
    /// The port; 0 when none is written.
    pub port: u16,
    /// `weight N`; HAProxy's default is 1.
    pub weight: u32,
    /// True with the `disabled` keyword (the server starts in maintenance).
    pub disabled: bool,
}

impl ServerLine {
    /// The address as an IP, when it is one (the Runtime API cannot set a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// A proxy section that can hold servers (`backend` or `listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSection {
    /// The proxy name.
    pub name: String,
    /// Its servers, in file order.
    pub servers: Vec<ServerLine>,
}

/// What a file says, reduced to what the Runtime API can and cannot change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HaproxyFile {
    /// Every `backend` and `listen` section, in file order.
    pub backends: Vec<BackendSection>,
    /// The file with comments and blank lines dropped, and in `server` lines the address, port,
    /// `weight` and `disabled` taken out: two files with equal skeletons differ only in what
    /// `set server` can change.
    pub skeleton: Vec<String>,
}

/// Section keywords; any of them ends the section before it.
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
];

/// Parses HAProxy config text.
pub fn parse(text: &str) -> HaproxyFile {
    let mut file = HaproxyFile::default();
    let mut in_backend = false;
    for line in text.lines() {
        let words: Vec<&str> = strip_comment(line).split_whitespace().collect();
        let Some(&keyword) = words.first() else {
            continue;
        };
        if SECTIONS.contains(&keyword) {
            in_backend = matches!(keyword, "backend" | "listen");
            if in_backend {
                file.backends.push(BackendSection {
                    name: words.get(1).unwrap_or(&"").to_string(),
                    servers: Vec::new(),
                });
            }
            file.skeleton.push(words.join(" "));
            continue;
        }
        if in_backend
            && keyword == "server"
            && let (Some(name), Some(addr)) = (words.get(1), words.get(2))
            && let Some(backend) = file.backends.last_mut()
        {
            let (address, port) = split_address(addr);
            let mut server = ServerLine {
                name: name.to_string(),
                address,
                port,
                weight: 1,
                disabled: false,
            };
            let mut rest = vec!["server", name];
            let mut i = 3;
            while i < words.len() {
                match words[i] {
                    "disabled" => server.disabled = true,
                    "weight" if words.get(i + 1).is_some_and(|w| w.parse::<u32>().is_ok()) => {
                        server.weight = words[i + 1].parse().unwrap_or(1);
                        i += 1;
                    }
                    other => rest.push(other),
                }
                i += 1;
            }
            backend.servers.push(server);
            file.skeleton.push(rest.join(" "));
            continue;
        }
        file.skeleton.push(words.join(" "));
    }
    file
}

impl HaproxyFile {
    /// The section called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendSection> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Drops a `#` comment; a `#` inside quotes or after a backslash is text.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => quote = Some(c),
            '#' if quote.is_none() => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `127.0.0.2:8080`, `[::1]:8080`, `app.internal:80`, `0.0.0.0:0`; no port means 0.
fn split_address(text: &str) -> (String, u16) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((ip, after)) = rest.split_once(']')
    {
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        return (ip.to_string(), port);
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets is a bare IPv6 address.
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().unwrap_or(0)),
        _ => (text.to_string(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Generated by elasticd\n\
        backend web # the pool\n\
        \x20   mode http\n\
        \x20   default-server check inter 2s\n\
        \x20   server web_s1 127.0.0.2:8080 weight 3 # i-1 a\n\
        \x20   server web_s2 [::1]:81\n\
        \x20   server web_s3 0.0.0.0:0 disabled\n\
        frontend fe\n\
        \x20   server not_a_backend_server 1.2.3.4:1\n\
        \x20   http-request set-header X \"a # b\"\n";

    #[test]
    fn servers_are_read_with_address_port_weight_and_state() {
        let file = parse(FILE);
        assert_eq!(file.backends.len(), 1);
        let web = file.backend("web").unwrap();
        assert_eq!(
            web.servers,
            vec![
                ServerLine {
                    name: "web_s1".into(),
                    address: "127.0.0.2".into(),
                    port: 8080,
                    weight: 3,
                    disabled: false
                },
                ServerLine {
                    name: "web_s2".into(),
                    address: "::1".into(),
                    port: 81,
                    weight: 1,
                    disabled: false
                },
                ServerLine {
                    name: "web_s3".into(),
                    address: "0.0.0.0".into(),
                    port: 0,
                    weight: 1,
                    disabled: true
                },
            ]
        );
        assert_eq!(web.servers[1].ip(), Some("::1".parse().unwrap()));
    }

    #[test]
    fn the_skeleton_ignores_what_set_server_can_change() {
        let a = parse(FILE);
        let b = parse(
            &FILE
                .replace("127.0.0.2:8080 weight 3 # i-1 a", "127.0.0.9:9 disabled")
                .replace("[::1]:81", "127.0.0.3:80 weight 7")
                .replace("# Generated by elasticd", ""),
        );
        assert_eq!(a.skeleton, b.skeleton);
        let c = parse(&FILE.replace("inter 2s", "inter 3s"));
        assert_ne!(a.skeleton, c.skeleton);
        let d = parse(&FILE.replace("    server web_s3 0.0.0.0:0 disabled\n", ""));
        assert_ne!(a.skeleton, d.skeleton);
        // A quoted `#` is not a comment.
        assert!(a.skeleton.iter().any(|l| l.contains("\"a # b\"")));
    }
}
