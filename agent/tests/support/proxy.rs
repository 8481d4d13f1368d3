//! A TCP proxy on loopback that passes the client's bytes through at once
//! and the server's a byte at a time, with a pause between bytes (never long
//! enough for a stall timeout): a trickling server in front of a real one.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The proxy; stops accepting when dropped.
pub struct Trickle {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Trickle {
    /// Proxies `127.0.0.1:<port>` to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, gap: Duration) -> Trickle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) =
                    (client, TcpStream::connect(("127.0.0.1", upstream)))
                else {
                    continue;
                };
                let stopped = stopped.clone();
                thread::spawn(move || pipe(client, server, gap, stopped));
            }
        });
        Trickle { port, stop }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn pipe(client: TcpStream, server: TcpStream, gap: Duration, stop: Arc<AtomicBool>) {
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut server, mut client) = (server, client);
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::SeqCst) {
        match server.read(&mut byte) {
            Ok(1) => {}
            _ => break,
        }
        if client.write_all(&byte).is_err() {
            break;
        }
        thread::sleep(gap);
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
