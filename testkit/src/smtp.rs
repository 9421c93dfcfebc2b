//! A small SMTP server for tests: speaks enough of RFC 5321 for a real client (lettre) to deliver to it,
//! and keeps what it accepted. It can hold its answer to a message's end of data, to let a test kill the
//! sender mid-send: a message whose sender hung up before the answer is not accepted, as with a real
//! mail server that never said "250".

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message as sent (headers and body), dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The body (after the headers), with quoted-printable soft breaks and `=XX` escapes decoded.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

/// A running test SMTP server; stops when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Mail>>>,
    hold: Arc<Mutex<Duration>>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test SMTP server");
        let addr = listener.local_addr().expect("bound");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(Mutex::new(Duration::ZERO));
        let task = {
            let (accepted, hold) = (accepted.clone(), hold.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(session(stream, accepted.clone(), hold.clone()));
                }
            })
        };
        Self { addr, accepted, hold, task }
    }

    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message accepted so far.
    pub fn accepted(&self) -> Vec<Mail> {
        self.accepted.lock().expect("accepted lock").clone()
    }

    /// From now on, wait this long before answering a message's end of data.
    pub fn hold_answers(&self, hold: Duration) {
        *self.hold.lock().expect("hold lock") = hold;
    }

    /// Waits until `done` holds for the accepted messages, up to `patience`; returns them either way.
    pub async fn wait_for(&self, patience: Duration, done: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mails = self.accepted();
            if done(&mails) || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, accepted: Arc<Mutex<Vec<Mail>>>, hold: Arc<Mutex<Duration>>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if write.write_all(b"220 testkit ESMTP ready\r\n").await.is_err() {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        match tokio::time::timeout(Duration::from_secs(60), read.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let answer: &[u8] = if upper.starts_with("EHLO") {
            b"250-testkit\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            (from, to) = (String::new(), Vec::new());
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command["MAIL FROM:".len()..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&command["RCPT TO:".len()..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            if write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match tokio::time::timeout(Duration::from_secs(60), read.read_line(&mut line)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(unstuffed.trim_end_matches(['\r', '\n']));
                data.push_str("\r\n");
            }
            let pause = *hold.lock().expect("hold lock");
            if !pause.is_zero() {
                // The sender sends nothing while it waits for the answer: anything read now is its hang-up.
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = read.read(&mut byte) => return,
                }
            }
            if write.write_all(b"250 OK queued\r\n").await.is_err() {
                return;
            }
            accepted.lock().expect("accepted lock").push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            continue;
        } else if upper.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 command not implemented\r\n"
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn address(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw.split_whitespace().next().unwrap_or_default();
    raw.trim_start_matches('<').trim_end_matches('>').to_owned()
}
