//! The /proc/net line parsers and the target text, on lines as the kernel
//! writes them (x86_64: little-endian words).

use procfs::FromBufReadSI;
use procfs::net::{TcpNetEntries, UdpNetEntries};

use super::*;

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn tcp_entries(lines: &str) -> Vec<TcpNetEntry> {
    let text = format!("{TCP_HEADER}{lines}");
    let TcpNetEntries(entries) =
        TcpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info())
            .expect("tcp lines parse");
    entries
}

fn tcp(proto: Proto, line: &str) -> SocketInfo {
    let entries = tcp_entries(line);
    assert_eq!(entries.len(), 1);
    from_tcp(proto, &entries[0])
}

#[test]
fn tcp4_hex_address_is_little_endian_word_and_big_endian_port() {
    let info = tcp(
        Proto::Tcp,
        "   0: 0100007F:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n",
    );
    assert_eq!(info.inode, 12345);
    assert_eq!(info.local.as_deref(), Some("127.0.0.1:4000"));
    assert_eq!(info.remote, None, "0.0.0.0:0 is no peer");
    assert_eq!(info.state, "LISTEN");
    assert!(info.netstat_visible);
    assert_eq!(info.local_port(), Some(4000));
    assert_eq!(target_text(&info), "tcp 127.0.0.1:4000 LISTEN");
}

#[test]
fn tcp4_established_and_close_wait_name_their_peer() {
    let info = tcp(
        Proto::Tcp,
        "   3: 0100007F:0FA0 0100007F:D0E6 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1\n",
    );
    assert_eq!(info.remote.as_deref(), Some("127.0.0.1:53478"));
    assert_eq!(
        target_text(&info),
        "tcp 127.0.0.1:4000 → 127.0.0.1:53478 ESTABLISHED"
    );
    // A MySQL client connection, as /proc/net/tcp writes it:
    // 192.168.103.222:52383 → 192.168.100.11:3306.
    let mysql = tcp(
        Proto::Tcp,
        "   4: DE67A8C0:CC9F 0B64A8C0:0CEA 08 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1\n",
    );
    assert_eq!(mysql.local.as_deref(), Some("192.168.103.222:52383"));
    assert_eq!(mysql.remote.as_deref(), Some("192.168.100.11:3306"));
    assert_eq!(mysql.state, "CLOSE_WAIT");
}

#[test]
fn tcp6_addresses_are_four_host_order_words() {
    // ::1 — the last word's bytes 00 00 00 01 print as 01000000.
    let loopback = tcp(
        Proto::Tcp6,
        "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 501 1 0000000000000000 100 0 0 10 0\n",
    );
    assert_eq!(loopback.local.as_deref(), Some("[::1]:8080"));
    assert_eq!(loopback.remote, None);
    // 2001:db8::1 — first word 20 01 0d b8 prints as B80D0120.
    let global = tcp(
        Proto::Tcp6,
        "   1: B80D0120000000000000000001000000:0016 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 502 1 0000000000000000 100 0 0 10 0\n",
    );
    assert_eq!(global.local.as_deref(), Some("[2001:db8::1]:22"));
    assert_eq!(global.remote.as_deref(), Some("[::ffff:127.0.0.1]:40000"));
    assert_eq!(global.local_port(), Some(22));
}

#[test]
fn time_wait_has_no_inode_and_is_kept_only_in_the_tcp_list() {
    let mut table = SocketTable::default();
    for entry in tcp_entries(
        "   0: 0100007F:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n\
         \x20  1: 0100007F:0FA0 0100007F:D0E6 06 00000000:00000000 03:000016B0 00000000     0        0 0 3 0000000000000000\n\
         \x20  2: 0100007F:0FA0 0100007F:D0E8 06 00000000:00000000 03:000016B0 00000000     0        0 0 3 0000000000000000\n",
    ) {
        table.insert(from_tcp(Proto::Tcp, &entry));
    }
    assert_eq!(table.tcp().len(), 3);
    assert_eq!(
        table
            .tcp()
            .iter()
            .filter(|s| s.state == "TIME_WAIT")
            .count(),
        2
    );
    assert!(table.lookup(0).is_none());
    assert_eq!(table.lookup(12345).unwrap().state, "LISTEN");
}

#[test]
fn udp_bound_is_unconn_and_connected_is_established() {
    let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
        \x20 123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23456 2 0000000000000000 0\n\
        \x20 124: 0100007F:9C41 0100007F:2198 01 00000000:00000000 00:00000000 00000000     0        0 23457 2 0000000000000000 0\n";
    let UdpNetEntries(entries) =
        UdpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info()).unwrap();
    let bound = from_udp(Proto::Udp, &entries[0]);
    assert_eq!(target_text(&bound), "udp 0.0.0.0:68 UNCONN");
    assert!(bound.netstat_visible);
    let connected = from_udp(Proto::Udp, &entries[1]);
    assert_eq!(
        target_text(&connected),
        "udp 127.0.0.1:40001 → 127.0.0.1:8600 ESTABLISHED"
    );
    // raw sockets share the layout; the "port" is the IP protocol.
    let raw = from_udp(Proto::Raw, &entries[0]);
    assert_eq!(raw.sock_type, Some(SockType::Raw));
}

#[test]
fn unix_lines_listen_flag_spaces_abstract_and_unnamed() {
    let listen =
        parse_unix_line("0000000007b23f3e: 00000002 00000000 00010000 0001 01 46791 /run/x.sock")
            .unwrap();
    assert_eq!(listen.inode, 46791);
    assert_eq!(listen.state, "LISTEN");
    assert_eq!(listen.sock_type, Some(SockType::Stream));
    assert_eq!(target_text(&listen), "unix /run/x.sock LISTEN");

    let spaced =
        parse_unix_line("00000000a1: 00000002 00000000 00000000 0002 01 5 /tmp/a b  c").unwrap();
    assert_eq!(spaced.local.as_deref(), Some("/tmp/a b  c"));
    assert_eq!(target_text(&spaced), "unix dgram /tmp/a b  c UNCONN");

    let abstract_name =
        parse_unix_line("00000000a2: 00000003 00000000 00000000 0001 03 6 @fdbg\x01name").unwrap();
    assert_eq!(abstract_name.local.as_deref(), Some("@fdbg\x01name"));
    assert_eq!(abstract_name.state, "ESTABLISHED");

    let unnamed =
        parse_unix_line("000000006dc5fac8: 00000003 00000000 00000000 0005 03 46797").unwrap();
    assert_eq!(unnamed.local, None);
    assert_eq!(unnamed.sock_type, Some(SockType::Seqpacket));
    assert_eq!(
        target_text(&unnamed),
        "unix seqpacket (unnamed) ESTABLISHED"
    );

    assert_eq!(parse_unix_line("garbage"), None);
    assert_eq!(parse_unix_line("00: 1 2"), None);
}

#[test]
fn netlink_line_names_family_and_port_id() {
    let info = parse_netlink_line(
        "000000007b8cc14c 0   4242       00000000 0        0        0     2        0        477     ",
    )
    .unwrap();
    assert_eq!(info.inode, 477);
    assert_eq!(info.proto, Proto::Netlink);
    assert_eq!(target_text(&info), "netlink route:4242 UNCONN");
    let uevent = parse_netlink_line(
        "00000000e8d7078b 15  0          00000001 0        0        0     2        0        9",
    )
    .unwrap();
    assert_eq!(uevent.local.as_deref(), Some("kobject_uevent:0"));
    assert_eq!(parse_netlink_line("0 0 0"), None);
}

#[test]
fn packet_line_names_ethertype_and_interface() {
    let info = parse_packet_line("0000000012345678 3      3    0003   2     1 0      0      88123")
        .unwrap();
    assert_eq!(info.inode, 88123);
    assert_eq!(info.sock_type, Some(SockType::Raw));
    assert_eq!(target_text(&info), "packet 0x0003:2 UNCONN");
}

#[test]
fn unconnected_target_text_matches_the_spec_example() {
    let info = SocketInfo {
        inode: 1,
        proto: Proto::Udp,
        sock_type: Some(SockType::Dgram),
        local: Some("0.0.0.0:0".into()),
        remote: None,
        state: UNCONNECTED.into(),
        netstat_visible: false,
    };
    assert_eq!(target_text(&info), "udp 0.0.0.0:0 unconnected");
    let unknown = SocketInfo {
        proto: Proto::Other,
        sock_type: None,
        local: None,
        ..info
    };
    assert_eq!(target_text(&unknown), "other unconnected");
}

#[test]
fn socket_inode_reads_only_socket_links() {
    assert_eq!(socket_inode("socket:[31873]"), Some(31873));
    assert_eq!(socket_inode("pipe:[31873]"), None);
    assert_eq!(socket_inode("socket:[x]"), None);
}

#[test]
fn classify_by_domain_type_protocol() {
    let stream = Some(SockType::Stream);
    let dgram = Some(SockType::Dgram);
    assert_eq!(classify(libc::AF_INET, stream, 0), Proto::Tcp);
    assert_eq!(
        classify(libc::AF_INET6, stream, libc::IPPROTO_TCP),
        Proto::Tcp6
    );
    assert_eq!(
        classify(libc::AF_INET, dgram, libc::IPPROTO_UDP),
        Proto::Udp
    );
    assert_eq!(classify(libc::AF_INET6, dgram, 0), Proto::Udp6);
    assert_eq!(
        classify(libc::AF_INET, dgram, libc::IPPROTO_ICMP),
        Proto::Other
    );
    assert_eq!(classify(libc::AF_INET, Some(SockType::Raw), 1), Proto::Raw);
    assert_eq!(classify(libc::AF_UNIX, dgram, 0), Proto::Unix);
    assert_eq!(
        classify(libc::AF_NETLINK, Some(SockType::Raw), 0),
        Proto::Netlink
    );
    assert_eq!(
        classify(libc::AF_PACKET, Some(SockType::Raw), 3),
        Proto::Packet
    );
    assert_eq!(classify(libc::AF_BLUETOOTH, stream, 0), Proto::Other);
}
