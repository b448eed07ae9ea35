//! A debuginfod client: the separate debug file of an object that has no
//! DWARF on this machine, fetched by build-id from the servers of
//! `DEBUGINFOD_URLS` and kept in the cache that elfutils' own client (and
//! so gdb) uses, `CACHE/BUILDID/debuginfo`.
//!
//! The elfutils conventions, read once at the start:
//!
//! - `DEBUGINFOD_URLS`: servers, separated by spaces, asked in order
//!   (`http://` and `https://`; others are ignored, with a note). Unset or
//!   empty: no client, no cache, no network.
//! - `DEBUGINFOD_CACHE_PATH`, else `~/.debuginfod_client_cache` when it
//!   exists, else `$XDG_CACHE_HOME/debuginfod_client`, else
//!   `~/.cache/debuginfod_client`.
//! - `DEBUGINFOD_TIMEOUT`: seconds a server may take to connect, and then
//!   to send anything at all, before it counts as down. elfutils waits 90 s;
//!   fdbg asks while the user waits for a report, so 2 s unless set.
//! - `DEBUGINFOD_MAXTIME` (seconds for a whole download) and
//!   `DEBUGINFOD_MAXSIZE` (bytes): no limit unless set.
//!
//! Each build-id is asked once per session, and a server that failed once
//! (refused, timed out, answered with an error) is not asked again in the
//! session: a down server costs one timeout, not one per object. Each such
//! failure is a note for the front end to show, once. A download lands in
//! a temporary file beside its place in the cache and is moved there only
//! if it is a whole ELF file with the build-id asked for; anything else
//! (garbage, a truncated body, another build) is dropped, with a note, and
//! the frames keep the names the object's own symbol tables give.
//!
//! The protocol is one GET of `SERVER/buildid/HEX/debuginfo`. The
//! `debuginfod` crate speaks it, but asks all servers as one (which server
//! failed is not told apart, so a down one would be asked again for every
//! object), does not check what it stores, and brings reqwest with an async
//! runtime; `ureq` alone is a small blocking client with a connect
//! timeout, a timeout per read (elfutils' "no progress" timeout), an overall
//! one, a body limit, proxies from the environment and rustls for https.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ReadCache};

use super::object::hex;

/// How long a server may take to connect, and to send anything, unless
/// `DEBUGINFOD_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to ask, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Server base URLs, without a trailing `/`, in the order asked.
    pub urls: Vec<String>,
    /// Entries of `DEBUGINFOD_URLS` that are not http(s) URLs.
    pub ignored: Vec<String>,
    pub cache: PathBuf,
    /// To connect, and for each read (headers and body).
    pub timeout: Duration,
    /// For a whole download.
    pub max_time: Option<Duration>,
    /// Largest debug file fetched, in bytes.
    pub max_size: Option<u64>,
}

impl Settings {
    /// From fdbg's environment; `None` without servers.
    pub fn from_env() -> Option<Settings> {
        Settings::from_vars(|name| std::env::var_os(name))
    }

    /// From the variables `var` gives (the environment, or a test's).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Option<Settings> {
        let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
        let list = text("DEBUGINFOD_URLS")?;
        let (urls, ignored): (Vec<&str>, Vec<&str>) = list
            .split_whitespace()
            .partition(|url| url.starts_with("http://") || url.starts_with("https://"));
        if urls.is_empty() && ignored.is_empty() {
            return None;
        }
        let seconds = |name: &str| {
            text(name)
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
        };
        let home = var("HOME").map(PathBuf::from);
        let cache = match var("DEBUGINFOD_CACHE_PATH").filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => {
                let legacy = home.as_ref().map(|h| h.join(".debuginfod_client_cache"));
                match legacy.filter(|l| l.is_dir()) {
                    Some(legacy) => legacy,
                    None => var("XDG_CACHE_HOME")
                        .filter(|x| !x.is_empty())
                        .map(PathBuf::from)
                        .or_else(|| home.map(|h| h.join(".cache")))
                        .unwrap_or_else(|| PathBuf::from("/tmp"))
                        .join("debuginfod_client"),
                }
            }
        };
        Some(Settings {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            ignored: ignored.iter().map(|u| u.to_string()).collect(),
            cache,
            timeout: seconds("DEBUGINFOD_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT),
            max_time: seconds("DEBUGINFOD_MAXTIME"),
            max_size: text("DEBUGINFOD_MAXSIZE").and_then(|s| s.trim().parse().ok()),
        })
    }
}

/// Why one request gave no debug file.
enum Failure {
    /// The server does not have it (404).
    Missing,
    /// The server cannot be used: not asked again this session.
    Down(String),
    /// It sent something that is not the debug file asked for.
    Bad(String),
    /// The cache cannot be written.
    Cache(io::Error),
}

/// One session's client: its servers' state and the answers so far.
pub struct Client {
    settings: Settings,
    agent: ureq::Agent,
    /// Per server (as `settings.urls`), set once it failed.
    down: Vec<bool>,
    /// Each build-id asked, and the debug file found for it.
    answers: HashMap<Vec<u8>, Option<PathBuf>>,
    /// Requests sent, to any server.
    requests: usize,
    notes: Vec<String>,
    noted: HashSet<String>,
}

impl Client {
    pub fn new(settings: Settings) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(settings.timeout))
            .timeout_per_read(Some(settings.timeout))
            .timeout_global(settings.max_time)
            .http_status_as_error(false)
            .user_agent(concat!("fdbg/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let mut client = Client {
            down: vec![false; settings.urls.len()],
            settings,
            agent,
            answers: HashMap::new(),
            requests: 0,
            notes: Vec::new(),
            noted: HashSet::new(),
        };
        for url in client.settings.ignored.clone() {
            client.note(format!(
                "debuginfod: {url} in DEBUGINFOD_URLS is not an http(s) URL; ignored"
            ));
        }
        client
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Requests sent so far (each build-id at most once per server, none
    /// to a server once it is down).
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// What happened that the user should hear of, each once, since the
    /// last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn note(&mut self, text: String) {
        if self.noted.insert(text.clone()) {
            self.notes.push(text);
        }
    }

    /// The separate debug file of the object with `build_id`: from the
    /// cache, else from the first server that has it (then cached). Asked
    /// once per session; `None` when no server has it or none answers.
    pub fn debuginfo(&mut self, build_id: &[u8]) -> Option<PathBuf> {
        if build_id.is_empty() {
            return None;
        }
        if let Some(answer) = self.answers.get(build_id) {
            return answer.clone();
        }
        let answer = self.find(build_id);
        self.answers.insert(build_id.to_vec(), answer.clone());
        answer
    }

    fn find(&mut self, build_id: &[u8]) -> Option<PathBuf> {
        let hex = hex(build_id);
        let place = self.settings.cache.join(&hex).join("debuginfo");
        if check(&place, build_id).is_ok() {
            return Some(place);
        }
        for server in 0..self.settings.urls.len() {
            if self.down[server] {
                continue;
            }
            let url = self.settings.urls[server].clone();
            match self.download(&url, &hex, build_id, &place) {
                Ok(()) => return Some(place),
                Err(Failure::Missing) => {}
                Err(Failure::Down(why)) => {
                    self.down[server] = true;
                    self.note(format!(
                        "debuginfod: {url} did not answer ({why}); not asked again this session, \
                         frames its debug info would name keep symbol-table names"
                    ));
                }
                Err(Failure::Bad(why)) => self.note(format!(
                    "debuginfod: {url} sent a bad debug file for build-id {hex} ({why}); ignored"
                )),
                Err(Failure::Cache(e)) => {
                    self.note(format!(
                        "debuginfod: cannot write the cache {} ({e}); nothing fetched",
                        self.settings.cache.display()
                    ));
                    return None;
                }
            }
        }
        None
    }

    /// One GET, its body into a temporary file beside `place`, moved there
    /// once checked.
    fn download(
        &mut self,
        url: &str,
        hex: &str,
        build_id: &[u8],
        place: &Path,
    ) -> Result<(), Failure> {
        self.requests += 1;
        let response = self
            .agent
            .get(&format!("{url}/buildid/{hex}/debuginfo"))
            .call()
            .map_err(|e| Failure::Down(e.to_string()))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Failure::Missing),
            status => return Err(Failure::Down(format!("HTTP status {status}"))),
        }
        let dir = place.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir).map_err(Failure::Cache)?;
        let temporary = dir.join(format!(".debuginfo.fdbg-{}.tmp", std::process::id()));
        let mut out = File::create(&temporary).map_err(Failure::Cache)?;
        let mut body = response.into_body();
        let mut config = body.with_config();
        if let Some(limit) = self.settings.max_size {
            config = config.limit(limit);
        }
        let copied = io::copy(&mut config.reader(), &mut out);
        drop(out);
        let kept = match copied {
            Err(e) => Err(Failure::Down(format!("download cut short: {e}"))),
            Ok(_) => match check(&temporary, build_id) {
                Err(why) => Err(Failure::Bad(why)),
                Ok(()) => fs::rename(&temporary, place).map_err(Failure::Cache),
            },
        };
        if kept.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        kept
    }
}

/// Whether `path` is a whole ELF file with `build_id`; if not, why.
fn check(path: &Path, build_id: &[u8]) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    let cache = ReadCache::new(file);
    let elf = ElfFile64::<Endianness, _>::parse(&cache)
        .map_err(|_| format!("not a whole ELF file, {length} bytes"))?;
    match elf.build_id() {
        Ok(Some(id)) if id == build_id => {}
        Ok(Some(id)) => return Err(format!("its build-id is {}", hex(id))),
        _ => return Err("it has no build-id".into()),
    }
    for section in elf.sections() {
        if let Some((offset, size)) = section.file_range()
            && offset.saturating_add(size) > length
        {
            return Err(format!("truncated: {length} bytes"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    fn vars(list: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let list: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            list.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn settings_follow_the_elfutils_variables() {
        assert_eq!(Settings::from_vars(vars(&[("HOME", "/h")])), None);
        assert_eq!(
            Settings::from_vars(vars(&[("DEBUGINFOD_URLS", "  ")])),
            None
        );
        let settings = Settings::from_vars(vars(&[
            (
                "DEBUGINFOD_URLS",
                "https://a.example/ file:///srv/debug  http://127.0.0.1:8002",
            ),
            ("HOME", "/nonexistent-home"),
            ("DEBUGINFOD_TIMEOUT", "7"),
            ("DEBUGINFOD_MAXSIZE", "1000"),
        ]))
        .unwrap();
        assert_eq!(
            settings.urls,
            ["https://a.example", "http://127.0.0.1:8002"]
        );
        assert_eq!(settings.ignored, ["file:///srv/debug"]);
        assert_eq!(
            settings.cache,
            PathBuf::from("/nonexistent-home/.cache/debuginfod_client")
        );
        assert_eq!(settings.timeout, Duration::from_secs(7));
        assert_eq!(settings.max_time, None);
        assert_eq!(settings.max_size, Some(1000));
        let settings = Settings::from_vars(vars(&[
            ("DEBUGINFOD_URLS", "http://x"),
            ("HOME", "/nonexistent-home"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("DEBUGINFOD_TIMEOUT", "soon"),
        ]))
        .unwrap();
        assert_eq!(settings.cache, PathBuf::from("/xdg/debuginfod_client"));
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        let settings = Settings::from_vars(vars(&[
            ("DEBUGINFOD_URLS", "http://x"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("DEBUGINFOD_CACHE_PATH", "/my/cache"),
        ]))
        .unwrap();
        assert_eq!(settings.cache, PathBuf::from("/my/cache"));
    }

    /// A server on 127.0.0.1 that answers every request with `answer`
    /// (the request read up to its blank line first). Ends after
    /// `requests` answers, returning how many it gave.
    fn serve(requests: usize, answer: Vec<u8>) -> (String, std::thread::JoinHandle<usize>) {
        serve_by_path(requests, move |_| answer.clone())
    }

    /// As `serve`, the answer made from the request's path.
    fn serve_by_path(
        requests: usize,
        answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let _ = stream.write_all(&answer(&path));
                served += 1;
            }
            served
        });
        (url, thread)
    }

    fn ok(body: &[u8], length: usize) -> Vec<u8> {
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    fn client(url: &str, cache: &Path) -> Client {
        Client::new(Settings {
            urls: vec![url.to_string()],
            ignored: Vec::new(),
            cache: cache.to_path_buf(),
            timeout: Duration::from_secs(5),
            max_time: None,
            max_size: None,
        })
    }

    fn fresh_cache(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fdbg-debuginfod-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// An ELF file with a build-id: this machine's libc.
    fn real_elf() -> (Vec<u8>, Vec<u8>) {
        let path = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libc");
        let bytes = fs::read(path).unwrap();
        let id = super::super::object::build_id(&File::open(path).unwrap()).expect("a build-id");
        (bytes, id)
    }

    /// Nothing of a rejected download is left in the cache.
    fn assert_nothing_cached(cache: &Path, id: &[u8]) {
        let dir = cache.join(hex(id));
        let left: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?} left in {}", dir.display());
    }

    #[test]
    fn a_good_download_is_cached_and_asked_once() {
        let (bytes, id) = real_elf();
        let (url, server) = serve(1, ok(&bytes, bytes.len()));
        let cache = fresh_cache("good");
        let mut client = client(&url, &cache);
        let got = client.debuginfo(&id).expect("fetched");
        assert_eq!(got, cache.join(hex(&id)).join("debuginfo"));
        assert_eq!(fs::read(&got).unwrap(), bytes);
        assert_eq!(client.debuginfo(&id), Some(got));
        assert_eq!(client.requests(), 1);
        assert!(client.take_notes().is_empty());
        assert_eq!(server.join().unwrap(), 1);
        // Another session finds it in the cache, asking no one.
        let mut later = self::client("http://127.0.0.1:1", &cache);
        assert!(later.debuginfo(&id).is_some());
        assert_eq!(later.requests(), 0);
        let _ = fs::remove_dir_all(&cache);
    }

    #[test]
    fn garbage_a_truncated_file_and_another_build_are_refused() {
        let (bytes, id) = real_elf();
        let mut other = bytes.clone();
        // Same file, another build-id: flip the id's bytes where they are.
        let at = other
            .windows(id.len())
            .position(|w| w == id.as_slice())
            .unwrap();
        for byte in &mut other[at..at + id.len()] {
            *byte ^= 0xff;
        }
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "garbage",
                ok(b"<html>no</html>", 15),
                "not a whole ELF file",
            ),
            ("another build", ok(&other, other.len()), "its build-id is"),
            // The whole header, then the connection closes early.
            ("truncated", ok(&bytes[..8192], bytes.len()), "cut short"),
            ("short", ok(&bytes[..8192], 8192), "not a whole ELF file"),
            (
                "error",
                b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec(),
                "503",
            ),
        ];
        for (name, answer, why) in cases {
            let (url, server) = serve(1, answer);
            let cache = fresh_cache(name);
            let mut client = client(&url, &cache);
            assert_eq!(client.debuginfo(&id), None, "{name}");
            let notes = client.take_notes();
            assert_eq!(notes.len(), 1, "{name}: {notes:?}");
            assert!(
                notes[0].contains(why) && notes[0].contains(&url),
                "{name}: {notes:?}"
            );
            assert_nothing_cached(&cache, &id);
            assert_eq!(server.join().unwrap(), 1);
            let _ = fs::remove_dir_all(&cache);
        }
    }

    #[test]
    fn a_missing_file_asks_the_next_server_and_a_down_one_is_not_asked_again() {
        let (bytes, id) = real_elf();
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (missing, first) = serve(2, not_found.clone());
        let wanted = format!("/buildid/{}/debuginfo", hex(&id));
        let (good, second) = serve_by_path(2, move |path| {
            if path == wanted {
                ok(&bytes, bytes.len())
            } else {
                not_found.clone()
            }
        });
        let refused = format!("http://127.0.0.1:{}", {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let cache = fresh_cache("order");
        let mut client = Client::new(Settings {
            urls: vec![refused.clone(), missing.clone(), good],
            ignored: Vec::new(),
            cache: cache.clone(),
            timeout: Duration::from_secs(5),
            max_time: None,
            max_size: None,
        });
        assert!(client.debuginfo(&id).is_some());
        assert_eq!(client.requests(), 3);
        // Another build-id: the refused server is down, the 404 one asked.
        assert_eq!(client.debuginfo(&[1, 2, 3, 4]), None);
        assert_eq!(client.requests(), 5);
        assert_eq!(client.debuginfo(&[1, 2, 3, 4]), None);
        assert_eq!(client.requests(), 5);
        let notes = client.take_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains(&refused), "{notes:?}");
        assert_eq!(first.join().unwrap(), 2);
        assert_eq!(second.join().unwrap(), 2);
        let _ = fs::remove_dir_all(&cache);
    }
}
