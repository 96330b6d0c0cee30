//! Tests that need network namespaces (root): mDNS discovery with no bootstrap on a
//! private link, and real NAT traversal — two nodes behind two nftables masquerading
//! NATs meet through a relay, then DCUtR punches a direct connection (and, with hole
//! punching blocked, the relayed path alone carries traffic). Every address lives in
//! namespaces the test creates and deletes; the tests skip, saying why, only where
//! namespaces cannot be made.

mod common;

use std::time::{Duration, Instant};

use common::{MODEL_ID, Namespaces, TestNode, sh, unique, wait_for};

/// Creates namespaces or explains why not (then the test skips).
fn namespaces(names: &[String]) -> Option<Namespaces> {
    match Namespaces::create(names) {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!(
                "SKIPPED: cannot create network namespaces here (needs root and iproute2): {why}"
            );
            None
        }
    }
}

#[test]
fn mdns_alone_finds_peers_on_a_lan() {
    // libp2p-mdns skips loopback interfaces, so the "LAN" is a veth pair inside one
    // namespace: no bootstrap, no other discovery.
    let lan = format!("cmd-{}", unique());
    let Some(_ns) = namespaces(std::slice::from_ref(&lan)) else {
        return;
    };
    let setup = [
        format!("ip -n {lan} link add m0 type veth peer name m1"),
        format!("ip -n {lan} addr add 10.77.0.1/24 dev m0"),
        format!("ip -n {lan} addr add 10.77.0.2/24 dev m1"),
        format!("ip -n {lan} link set m0 up"),
        format!("ip -n {lan} link set m1 up"),
    ];
    for s in &setup {
        sh(s).expect("LAN setup");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--mdns",
        "true",
        "--model-id",
        MODEL_ID,
        "--autonat-delay",
        "3600",
    ];
    let nodes: Vec<TestNode> = (0..3)
        .map(|i| TestNode::start(&format!("m{i}"), dir.path(), Some(&lan), &args))
        .collect();
    let started = Instant::now();
    for n in &nodes {
        let others: Vec<&str> = nodes
            .iter()
            .filter(|o| o.peer_id != n.peer_id)
            .map(|o| o.peer_id.as_str())
            .collect();
        wait_for(
            Duration::from_secs(40),
            &format!("{} to find the others by mDNS", n.name),
            || {
                let peers = n.peers();
                others
                    .iter()
                    .all(|id| {
                        peers
                            .iter()
                            .any(|p| p["peer_id"] == *id && p["connected"] == true)
                    })
                    .then_some(())
            },
        );
        assert!(n.log().contains("found on the LAN by mDNS"), "{}", n.log());
    }
    println!(
        "3 nodes found each other by mDNS in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// Two private networks behind two NATs and a public network with a relay:
///
/// ```text
///  a (192.168.1.2) ─ nat1 [masquerade] 10.99.1.2 ─┐
///                                                  relay 10.99.1.1 / 10.99.2.1 (routes between)
///  b (192.168.2.2) ─ nat2 [masquerade] 10.99.2.2 ─┘
/// ```
struct NatLab {
    ns: Namespaces,
    a: String,
    b: String,
    relay: String,
}

fn nat_lab(tag: &str) -> Option<NatLab> {
    let u = unique();
    let name = |n: &str| format!("c{tag}{n}-{u}");
    let (a, n1, relay, n2, b) = (name("a"), name("n1"), name("r"), name("n2"), name("b"));
    let ns = namespaces(&[a.clone(), n1.clone(), relay.clone(), n2.clone(), b.clone()])?;
    let mut steps = vec![];
    for (host, nat, lan, wan, i) in [
        (&a, &n1, "192.168.1", "10.99.1", 1),
        (&b, &n2, "192.168.2", "10.99.2", 2),
    ] {
        steps.extend([
            // Private side: host <-> NAT.
            format!("ip link add h{i} netns {host} type veth peer name l{i} netns {nat}"),
            format!("ip -n {host} addr add {lan}.2/24 dev h{i}"),
            format!("ip -n {host} link set h{i} up"),
            format!("ip -n {host} route add default via {lan}.1"),
            format!("ip -n {nat} addr add {lan}.1/24 dev l{i}"),
            format!("ip -n {nat} link set l{i} up"),
            // Public side: NAT <-> relay (which routes between the two public links).
            format!("ip link add w{i} netns {nat} type veth peer name r{i} netns {relay}"),
            format!("ip -n {nat} addr add {wan}.2/24 dev w{i}"),
            format!("ip -n {nat} link set w{i} up"),
            format!("ip -n {nat} route add default via {wan}.1"),
            format!("ip -n {relay} addr add {wan}.1/24 dev r{i}"),
            format!("ip -n {relay} link set r{i} up"),
            format!("ip netns exec {nat} sysctl -qw net.ipv4.ip_forward=1"),
            format!(
                // Masquerade out of the public side, and drop unsolicited packets to the
                // NAT box itself, as home routers do (else Linux conntrack records them
                // and masquerade must pick another port, spoiling the hole punch).
                "printf 'table ip nat {{\\n chain post {{ type nat hook postrouting priority 100; oifname \"w{i}\" masquerade; }}\\n}}\\ntable ip filter {{\\n chain input {{ type filter hook input priority 0; iifname \"w{i}\" drop; }}\\n}}\\n' | ip netns exec {nat} nft -f -"
            ),
        ]);
    }
    steps.push(format!(
        "ip netns exec {relay} sysctl -qw net.ipv4.ip_forward=1"
    ));
    for s in &steps {
        if let Err(e) = sh(s) {
            eprintln!("SKIPPED: cannot build the NAT lab here (needs nftables): {e}");
            return None;
        }
    }
    Some(NatLab { ns, a, b, relay })
}

fn nat_node_args(relay_addr: &str) -> Vec<String> {
    [
        "--listen",
        "/ip4/0.0.0.0/udp/0/quic-v1",
        "--bootstrap",
        relay_addr,
        "--relay",
        relay_addr,
        "--mdns",
        "false",
        "--model-id",
        MODEL_ID,
        "--autonat-delay",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_nat_pair(lab: &NatLab, dir: &std::path::Path) -> (TestNode, TestNode, TestNode) {
    let relay = TestNode::start(
        "relay",
        dir,
        Some(&lab.relay),
        &[
            "--role",
            "relay",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--mdns",
            "false",
            "--autonat-delay",
            "3600",
        ],
    );
    let via1 = format!("/ip4/10.99.1.1/udp/4001/quic-v1/p2p/{}", relay.peer_id);
    let via2 = format!("/ip4/10.99.2.1/udp/4001/quic-v1/p2p/{}", relay.peer_id);
    let a_args = nat_node_args(&via1);
    let b_args = nat_node_args(&via2);
    let a = TestNode::start(
        "a",
        dir,
        Some(&lab.a),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b = TestNode::start(
        "b",
        dir,
        Some(&lab.b),
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    (relay, a, b)
}

#[test]
fn nat_traversal_relay_then_dcutr_direct_connection() {
    let Some(lab) = nat_lab("h") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_relay, a, b) = start_nat_pair(&lab, dir.path());
    // The NATs really separate them: a cannot reach b's private address.
    sh("command -v ping").expect("the NAT test needs ping (apt-get install iputils-ping)");
    sh(&format!("ip netns exec {} ping -c1 -W1 10.99.1.1", lab.a)).expect("a reaches the relay");
    assert!(sh(&format!("ip netns exec {} ping -c1 -W1 192.168.2.2", lab.a)).is_err());
    let started = Instant::now();
    // a learns b's announcement (relayed circuit address among them) and dials it; the
    // relayed connection is then upgraded by DCUtR.
    let deadline = Instant::now() + Duration::from_secs(45);
    let row = loop {
        if let Some(row) = a.peer(&b.peer_id).filter(|r| r["connection"] == "direct") {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "no direct connection from a to b in 45 s: {:?}\n--- a ---\n{}\n--- b ---\n{}",
            a.peer(&b.peer_id),
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "direct connection after {:.2} s: {row}",
        started.elapsed().as_secs_f64()
    );
    let addrs: Vec<&str> = row["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        addrs
            .iter()
            .any(|x| x.contains("10.99.2.2") && !x.contains("p2p-circuit")),
        "a reaches b at b's NAT's public address: {addrs:?}"
    );
    let log = format!("{}\n{}", a.log(), b.log());
    assert!(log.contains("hole punch succeeded"), "{log}");
    let ping = a.json(&["ping", &b.peer_id, "-c", "2"]);
    assert!(ping["rtts_ms"][0].as_f64().is_some(), "{ping}");
    drop(lab.ns);
}

#[test]
fn nat_traversal_relayed_path_works_when_hole_punching_is_blocked() {
    let Some(lab) = nat_lab("x") else { return };
    // The public network drops NAT-to-NAT traffic: only the relay connects them.
    sh(&format!(
        "printf 'table inet block {{\\n chain nat2nat {{ type filter hook forward priority 0; ip saddr 10.99.0.0/16 ip daddr 10.99.0.0/16 drop; }}\\n}}\\n' | ip netns exec {} nft -f -",
        lab.relay
    ))
    .expect("blocking rule");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_relay, a, b) = start_nat_pair(&lab, dir.path());
    let row = wait_for(
        Duration::from_secs(30),
        "a relayed connection from a to b",
        || {
            let row = a.peer(&b.peer_id)?;
            (row["connected"] == true).then_some(row)
        },
    );
    let ping = wait_for(Duration::from_secs(20), "a ping over the relay", || {
        let out = a.cli(&["ping", &b.peer_id, "-c", "3", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["rtts_ms"][0].as_f64().is_some().then_some(v)
    });
    println!("relayed: {row}\nping: {ping}");
    // Give DCUtR time to try (and fail): the link must still be relayed only.
    std::thread::sleep(Duration::from_secs(8));
    let row = a.peer(&b.peer_id).expect("b still known");
    assert_eq!(row["connection"], "relayed", "{row}");
    assert!(
        row["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .all(|x| x.as_str().is_some_and(|s| s.contains("p2p-circuit"))),
        "{row}"
    );
    drop(lab.ns);
}
