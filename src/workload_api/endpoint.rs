//! Where the Workload API listens: `unix:` or `tcp:` URIs, as in `SPIFFE_ENDPOINT_SOCKET`.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The environment variable that names the Workload API endpoint (SPIFFE Workload Endpoint
/// specification, section 4).
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Longest endpoint string accepted, in bytes (a Unix socket path is at most ~108 bytes; a TCP
/// endpoint far less).
const MAX_ENDPOINT_LEN: usize = 4096;

/// A Workload API endpoint.
///
/// Parsed from the URI forms of the SPIFFE Workload Endpoint specification and the short forms
/// agents are commonly configured with:
///
/// | form | example |
/// |------|---------|
/// | `unix:///ABSOLUTE/PATH` | `unix:///run/spire/agent.sock` |
/// | `unix:/ABSOLUTE/PATH` | `unix:/run/spire/agent.sock` |
/// | `tcp://IP:PORT` | `tcp://127.0.0.1:8081`, `tcp://[::1]:8081` |
/// | `tcp:IP:PORT` | `tcp:127.0.0.1:8081` |
///
/// A TCP host must be an IP address (any address, as the specification allows; not a name).
/// Authorities on `unix:`, paths on `tcp:`, user info, queries, fragments and percent-escapes are
/// refused, each with its own [`EndpointError`].
///
/// ```
/// use tower_mtls::workload_api::Endpoint;
///
/// let unix: Endpoint = "unix:///run/spire/agent.sock".parse()?;
/// assert_eq!(unix.to_string(), "unix:///run/spire/agent.sock");
/// let tcp: Endpoint = "tcp:127.0.0.1:8081".parse()?;
/// assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:8081".parse().unwrap()));
/// assert!("tcp://agent.local:8081".parse::<Endpoint>().is_err());
/// # Ok::<(), tower_mtls::workload_api::EndpointError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A Unix domain socket at this absolute path.
    Unix(PathBuf),
    /// A TCP listener at this address.
    Tcp(SocketAddr),
}

/// Why a string is not a Workload API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// [`ENDPOINT_ENV`] is not set.
    #[error("{ENDPOINT_ENV} is not set")]
    EnvNotSet,
    /// [`ENDPOINT_ENV`] is not valid UTF-8.
    #[error("{ENDPOINT_ENV} is not valid UTF-8")]
    EnvNotUnicode,
    /// The string is empty.
    #[error("the Workload API endpoint is empty")]
    Empty,
    /// Longer than any real endpoint.
    #[error("the Workload API endpoint is {0} bytes long; at most 4096 are accepted")]
    TooLong(usize),
    /// No `scheme:` prefix.
    #[error("the Workload API endpoint has no scheme; expected unix:PATH or tcp:IP:PORT")]
    MissingScheme,
    /// A scheme other than `unix` or `tcp`.
    #[error("the Workload API endpoint scheme {0:?} is not supported; expected unix or tcp")]
    UnsupportedScheme(String),
    /// A query (`?...`).
    #[error("the Workload API endpoint must not have a query")]
    Query,
    /// A fragment (`#...`).
    #[error("the Workload API endpoint must not have a fragment")]
    Fragment,
    /// A percent-escape (`%2F`): not decoded, refused.
    #[error("the Workload API endpoint must not contain percent-escapes")]
    PercentEscape,
    /// `unix://host/...`: a Unix endpoint has no authority.
    #[error("a unix: endpoint must not have an authority (use unix:///path or unix:/path)")]
    UnixAuthority,
    /// `unix:` without a path, or with `/` alone.
    #[error("a unix: endpoint needs the socket's path")]
    UnixMissingPath,
    /// `unix:relative/path`.
    #[error("a unix: endpoint needs an absolute path")]
    UnixRelativePath,
    /// `tcp:` with nothing after it.
    #[error("a tcp: endpoint needs IP:PORT")]
    TcpMissingHost,
    /// `tcp://user@...`.
    #[error("a tcp: endpoint must not have user info")]
    TcpUserInfo,
    /// `tcp://127.0.0.1:8081/path`.
    #[error("a tcp: endpoint must not have a path")]
    TcpPath,
    /// The host is not an IP address (names are not allowed; IPv6 needs brackets).
    #[error("the host of a tcp: endpoint must be an IP address (IPv6 in brackets)")]
    TcpHostNotIp,
    /// No `:PORT`.
    #[error("a tcp: endpoint needs a port")]
    TcpMissingPort,
    /// The port is not a number in 1..=65535.
    #[error("the port of a tcp: endpoint must be a number from 1 to 65535")]
    TcpBadPort,
}

impl Endpoint {
    /// Parses an endpoint URI (see the table above).
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if s.len() > MAX_ENDPOINT_LEN {
            return Err(EndpointError::TooLong(s.len()));
        }
        let (scheme, rest) = s.split_once(':').ok_or(EndpointError::MissingScheme)?;
        if scheme.is_empty() || scheme.contains('/') {
            return Err(EndpointError::MissingScheme);
        }
        if rest.contains('?') {
            return Err(EndpointError::Query);
        }
        if rest.contains('#') {
            return Err(EndpointError::Fragment);
        }
        if rest.contains('%') {
            return Err(EndpointError::PercentEscape);
        }
        // RFC 3986 schemes are case-insensitive.
        if scheme.eq_ignore_ascii_case("unix") {
            parse_unix(rest)
        } else if scheme.eq_ignore_ascii_case("tcp") {
            parse_tcp(rest)
        } else {
            Err(EndpointError::UnsupportedScheme(
                scheme.chars().take(32).collect(),
            ))
        }
    }

    /// The endpoint named by [`ENDPOINT_ENV`] (`SPIFFE_ENDPOINT_SOCKET`).
    pub fn from_env() -> Result<Self, EndpointError> {
        from_env_value(std::env::var_os(ENDPOINT_ENV))
    }

    /// The socket path of a Unix endpoint.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) => Some(path),
            Endpoint::Tcp(_) => None,
        }
    }

    /// The address of a TCP endpoint.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Tcp(addr) => Some(*addr),
            Endpoint::Unix(_) => None,
        }
    }
}

fn from_env_value(value: Option<OsString>) -> Result<Endpoint, EndpointError> {
    let value = value.ok_or(EndpointError::EnvNotSet)?;
    let value = value
        .into_string()
        .map_err(|_| EndpointError::EnvNotUnicode)?;
    Endpoint::parse(&value)
}

fn parse_unix(rest: &str) -> Result<Endpoint, EndpointError> {
    let path = match rest.strip_prefix("//") {
        // `unix://` + authority + path: only the empty authority (`unix:///path`) is allowed.
        Some(after) => {
            if !after.is_empty() && !after.starts_with('/') {
                return Err(EndpointError::UnixAuthority);
            }
            after
        }
        None => rest,
    };
    if path.is_empty() || path == "/" {
        return Err(EndpointError::UnixMissingPath);
    }
    if !path.starts_with('/') {
        return Err(EndpointError::UnixRelativePath);
    }
    Ok(Endpoint::Unix(PathBuf::from(path)))
}

fn parse_tcp(rest: &str) -> Result<Endpoint, EndpointError> {
    let authority = rest.strip_prefix("//").unwrap_or(rest);
    if authority.is_empty() {
        return Err(EndpointError::TcpMissingHost);
    }
    if authority.contains('@') {
        return Err(EndpointError::TcpUserInfo);
    }
    if authority.contains('/') {
        return Err(EndpointError::TcpPath);
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or(EndpointError::TcpHostNotIp)?;
            match after.strip_prefix(':') {
                Some(port) => (host, port),
                None if after.is_empty() => return Err(EndpointError::TcpMissingPort),
                None => return Err(EndpointError::TcpHostNotIp),
            }
        }
        None => match authority.split_once(':') {
            // A second colon outside brackets is an unbracketed IPv6 address.
            Some((_, port)) if port.contains(':') => return Err(EndpointError::TcpHostNotIp),
            Some((host, port)) => (host, port),
            None => {
                return Err(if authority.parse::<IpAddr>().is_ok() {
                    EndpointError::TcpMissingPort
                } else {
                    EndpointError::TcpHostNotIp
                });
            }
        },
    };
    let ip: IpAddr = host.parse().map_err(|_| EndpointError::TcpHostNotIp)?;
    if authority.starts_with('[') != ip.is_ipv6() {
        return Err(EndpointError::TcpHostNotIp);
    }
    if port.is_empty() {
        return Err(EndpointError::TcpMissingPort);
    }
    // `u16::from_str` accepts a leading `+`; a port is digits only.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::TcpBadPort);
    }
    let port: u16 = port.parse().map_err(|_| EndpointError::TcpBadPort)?;
    if port == 0 {
        return Err(EndpointError::TcpBadPort);
    }
    Ok(Endpoint::Tcp(SocketAddr::new(ip, port)))
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

impl TryFrom<&str> for Endpoint {
    type Error = EndpointError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> Endpoint {
        Endpoint::Unix(PathBuf::from(path))
    }

    fn tcp(addr: &str) -> Endpoint {
        Endpoint::Tcp(addr.parse().expect("test address"))
    }

    #[test]
    fn accepts_the_spec_forms_and_the_short_ones() {
        let cases = [
            (
                "unix:///run/spire/agent.sock",
                unix("/run/spire/agent.sock"),
            ),
            ("unix:/run/spire/agent.sock", unix("/run/spire/agent.sock")),
            ("UNIX:/tmp/a.sock", unix("/tmp/a.sock")),
            ("tcp://127.0.0.1:8081", tcp("127.0.0.1:8081")),
            ("tcp:127.0.0.1:8081", tcp("127.0.0.1:8081")),
            ("tcp://10.1.2.3:1", tcp("10.1.2.3:1")),
            ("tcp://[::1]:8081", tcp("[::1]:8081")),
            ("tcp:[::1]:65535", tcp("[::1]:65535")),
        ];
        for (input, expected) in cases {
            assert_eq!(Endpoint::parse(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "unix:///run/a.sock",
            "tcp://127.0.0.1:8081",
            "tcp://[::1]:9",
        ] {
            let endpoint = Endpoint::parse(input).expect("valid");
            assert_eq!(endpoint.to_string(), input);
            assert_eq!(Endpoint::parse(&endpoint.to_string()), Ok(endpoint));
        }
    }

    #[test]
    fn refuses_malformed_endpoints_with_the_right_reason() {
        use EndpointError::*;
        let cases = [
            ("", Empty),
            ("/run/spire/agent.sock", MissingScheme),
            ("127.0.0.1:8081", UnsupportedScheme("127.0.0.1".into())),
            ("//x:y", MissingScheme),
            (":foo", MissingScheme),
            ("http://127.0.0.1:8081", UnsupportedScheme("http".into())),
            ("unix", MissingScheme),
            ("unix:", UnixMissingPath),
            ("unix://", UnixMissingPath),
            ("unix:///", UnixMissingPath),
            ("unix:/", UnixMissingPath),
            ("unix://agent/run/a.sock", UnixAuthority),
            ("unix://user@/run/a.sock", UnixAuthority),
            ("unix:run/a.sock", UnixRelativePath),
            ("unix:///run/a.sock?x=1", Query),
            ("unix:///run/a.sock#frag", Fragment),
            ("unix:///run/a%2Fb.sock", PercentEscape),
            ("tcp:", TcpMissingHost),
            ("tcp://", TcpMissingHost),
            ("tcp://127.0.0.1", TcpMissingPort),
            ("tcp://127.0.0.1:", TcpMissingPort),
            ("tcp://[::1]", TcpMissingPort),
            ("tcp://[::1]x", TcpHostNotIp),
            ("tcp://[::1:8081", TcpHostNotIp),
            ("tcp://::1:8081", TcpHostNotIp),
            ("tcp://[127.0.0.1]:8081", TcpHostNotIp),
            ("tcp://localhost:8081", TcpHostNotIp),
            ("tcp://agent", TcpHostNotIp),
            ("tcp://127.0.0.1:0", TcpBadPort),
            ("tcp://127.0.0.1:65536", TcpBadPort),
            ("tcp://127.0.0.1:+80", TcpBadPort),
            ("tcp://127.0.0.1:http", TcpBadPort),
            ("tcp://127.0.0.1:8081/", TcpPath),
            ("tcp://127.0.0.1:8081/foo", TcpPath),
            ("tcp://user@127.0.0.1:8081", TcpUserInfo),
            ("tcp://127.0.0.1:8081?x", Query),
            ("tcp://127.0.0.1:8081#x", Fragment),
        ];
        for (input, expected) in cases {
            assert_eq!(Endpoint::parse(input), Err(expected), "{input:?}");
        }
        let long = format!("unix:/{}", "a".repeat(5000));
        assert_eq!(Endpoint::parse(&long), Err(TooLong(long.len())));
        let scheme = format!("{}:x", "s".repeat(100));
        assert_eq!(
            Endpoint::parse(&scheme),
            Err(UnsupportedScheme("s".repeat(32)))
        );
    }

    #[test]
    fn reads_the_environment_value() {
        assert_eq!(from_env_value(None), Err(EndpointError::EnvNotSet));
        assert_eq!(
            from_env_value(Some("unix:/run/a.sock".into())),
            Ok(unix("/run/a.sock"))
        );
        assert_eq!(
            from_env_value(Some("tcp://host:1".into())),
            Err(EndpointError::TcpHostNotIp)
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            assert_eq!(
                from_env_value(Some(OsString::from_vec(vec![b'u', 0xff]))),
                Err(EndpointError::EnvNotUnicode)
            );
        }
    }

    #[test]
    fn accessors() {
        assert_eq!(unix("/a.sock").unix_path(), Some(Path::new("/a.sock")));
        assert_eq!(unix("/a.sock").tcp_addr(), None);
        assert_eq!(tcp("127.0.0.1:1").unix_path(), None);
        assert_eq!(
            tcp("127.0.0.1:1").tcp_addr(),
            Some("127.0.0.1:1".parse().expect("addr"))
        );
    }
}
