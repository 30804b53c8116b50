//! A WebSocket client that writes frames byte by byte, for protocol-violation tests: a real client library
//! refuses to send an unknown opcode, invalid UTF-8 or an oversized control frame, which is exactly what a
//! server must be shown to close with the right code (RFC 6455 §7.4.1).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawSocket {
    stream: TcpStream,
}

/// Opcodes and flags for [`RawSocket::send_frame`]'s first byte.
pub const FIN: u8 = 0x80;
pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

impl RawSocket {
    /// Upgrades `ws://host:port/path` with a hand-written handshake; panics unless the server answers 101.
    pub async fn connect(ws_url: &str) -> RawSocket {
        let rest = ws_url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (rest, "/".to_string()),
        };
        let mut stream = TcpStream::connect(host).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.expect("handshake reply");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        RawSocket { stream }
    }

    /// Sends one masked frame: `first` is the FIN/RSV/opcode byte as written on the wire.
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // The server may already have closed; the close code is what the test reads.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Reads the server's frames until its close frame and returns the close code; `None` when the connection
    /// ends (or 10 s pass) without one.
    pub async fn close_code(&mut self) -> Option<u16> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut head = [0u8; 2];
                self.stream.read_exact(&mut head).await.ok()?;
                let mut len = u64::from(head[1] & 0x7f);
                if len == 126 {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).await.ok()?;
                    len = u64::from(u16::from_be_bytes(b));
                } else if len == 127 {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).await.ok()?;
                    len = u64::from_be_bytes(b);
                }
                let mut payload = vec![0u8; usize::try_from(len).ok()?];
                self.stream.read_exact(&mut payload).await.ok()?;
                if head[0] & 0x0f == CLOSE {
                    return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}
