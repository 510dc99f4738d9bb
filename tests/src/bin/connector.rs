//! The workload the live tests start inside container-like cgroups: one connect of the
//! requested kind, so each test controls exactly which syscall path the kernel sees.
//!
//! `connector tcp ADDR` (connect(2)), `connector tfo ADDR` (TCP Fast Open sendto),
//! `connector uring ADDR` (io_uring IORING_OP_CONNECT), `connector none` (exec and exit),
//! `connector wait ADDR` (one connect once a line arrives on stdin, with no exec between:
//! the test decides when, e.g. after an agent is ready),
//! `connector burst N ADDR` (N connects in a tight loop).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    let address_at = |i: usize| args.get(i).and_then(|a| a.parse::<SocketAddr>().ok());
    let result = match args.get(1).map(String::as_str) {
        Some("none") => Ok(()),
        Some("wait") => match address_at(2) {
            Some(address) => {
                let mut line = String::new();
                match std::io::stdin().read_line(&mut line) {
                    Ok(n) if n > 0 => connect("tcp", address),
                    _ => Err("wait: stdin closed before the go-ahead".into()),
                }
            }
            None => Err("wait: expected ADDR".into()),
        },
        Some("burst") => match (number(2), address_at(3)) {
            (Some(n), Some(address)) => (0..n).try_for_each(|_| connect("tcp", address)),
            _ => Err("burst: expected N ADDR".into()),
        },
        Some(mode) => match args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()) {
            Some(address) => connect(mode, address),
            None => Err(format!("{mode}: expected a socket address")),
        },
        None => Err("usage: connector tcp|tfo|uring ADDR | none".into()),
    };
    if let Err(error) = result {
        eprintln!("connector: {error}");
        std::process::exit(1);
    }
}

fn connect(mode: &str, address: SocketAddr) -> Result<(), String> {
    match mode {
        // Refused or not, the connect reaches the kernel's hooks; that is all we need.
        "tcp" => {
            let _ = std::net::TcpStream::connect(address);
            Ok(())
        }
        "tfo" => tcp_fast_open(address),
        "uring" => io_uring_connect(address),
        other => Err(format!("unknown mode {other}")),
    }
}

/// Builds a sockaddr for `address`.
fn sockaddr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn socket(address: SocketAddr) -> Result<std::os::fd::OwnedFd, String> {
    let family = if address.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// sendto(MSG_FASTOPEN): connects without connect(2).
fn tcp_fast_open(address: SocketAddr) -> Result<(), String> {
    let fd = socket(address)?;
    let (storage, len) = sockaddr(address);
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    // SAFETY: valid fd, buffer and sockaddr for the duration of the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            libc::MSG_FASTOPEN,
            &storage as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if sent < 0 {
        let error = std::io::Error::last_os_error();
        // A refused or in-progress connect still went through the connect hooks.
        if !matches!(
            error.raw_os_error(),
            Some(libc::ECONNREFUSED | libc::EINPROGRESS)
        ) {
            return Err(format!("sendto(MSG_FASTOPEN): {error}"));
        }
    }
    Ok(())
}

/// IORING_OP_CONNECT: connects without the connect(2) syscall.
fn io_uring_connect(address: SocketAddr) -> Result<(), String> {
    let fd = socket(address)?;
    let (storage, len) = sockaddr(address);
    let mut ring = io_uring::IoUring::new(4).map_err(|e| format!("io_uring_setup: {e}"))?;
    let entry = io_uring::opcode::Connect::new(
        io_uring::types::Fd(fd.as_raw_fd()),
        &storage as *const _ as *const libc::sockaddr,
        len,
    )
    .build()
    .user_data(1);
    // SAFETY: the sockaddr outlives the submission (we wait for completion below).
    unsafe { ring.submission().push(&entry) }.map_err(|e| format!("io_uring push: {e}"))?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    let completion = ring.completion().next().ok_or("no io_uring completion")?;
    let result = completion.result();
    if result < 0 && result != -libc::ECONNREFUSED {
        return Err(format!(
            "io_uring connect: {}",
            std::io::Error::from_raw_os_error(-result)
        ));
    }
    Ok(())
}
