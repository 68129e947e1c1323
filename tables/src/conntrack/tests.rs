use super::tcp::flags::*;
use super::*;
use crate::proto::Proto;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: 0x0af4_0100 + i,
        dst: 0x0a60_0014,
        sport: 40_000 + (i % 1000) as u16,
        dport: 80,
        proto: Proto::Tcp.number(),
    }
}

/// DNAT of `k` (to the VIP) to backend 10.244.2.10:8080.
fn dnat(k: &FlowKey) -> FlowKey {
    FlowKey {
        src: 0x0af4_020a,
        dst: k.src,
        sport: 8080,
        dport: k.sport,
        proto: k.proto,
    }
}

#[test]
fn both_directions_and_nat_rewrites() {
    let ct = Conntrack::new(16);
    let k = key(1);
    let hit = ct.insert(k, dnat(&k), SYN, 7, 3, 0).unwrap();
    assert_eq!((hit.state, hit.flags, hit.epoch), (CtState::SynSent, 7, 3));
    let fwd = ct.lookup(&k).unwrap();
    assert_eq!(fwd.dir, Dir::Orig);
    assert_eq!(
        fwd.rewrite(),
        Some(FlowKey {
            src: k.src,
            dst: 0x0af4_020a,
            sport: k.sport,
            dport: 8080,
            proto: Proto::Tcp.number()
        })
    );
    let back = ct.lookup(&dnat(&k)).unwrap();
    assert_eq!(back.dir, Dir::Reply);
    assert_eq!(
        back.rewrite(),
        Some(k.reversed()),
        "replies look like they come from the VIP"
    );
    assert_eq!(ct.lookup(&key(2)), None);
    assert!(matches!(
        ct.insert(k, dnat(&k), SYN, 0, 0, 0),
        Err(InsertError::Exists(_))
    ));
    let plain = key(3);
    let hit = ct.insert(plain, plain.reversed(), SYN, 0, 0, 0).unwrap();
    assert_eq!(hit.rewrite(), None, "untranslated flows need no rewrite");
    assert_eq!(ct.len(), 2);
}

#[test]
fn tcp_lifecycle_reaches_time_wait_and_rst_closes() {
    let ct = Conntrack::new(16);
    let k = key(1);
    ct.insert(k, k.reversed(), SYN, 0, 0, 0).unwrap();
    let steps = [
        (k.reversed(), SYN | ACK, CtState::SynRecv),
        (k, ACK, CtState::Established),
        (k, FIN | ACK, CtState::FinWait),
        (k.reversed(), ACK, CtState::CloseWait),
        (k.reversed(), FIN | ACK, CtState::LastAck),
        (k, ACK, CtState::TimeWait),
    ];
    for (t, (pkt, flags, want)) in steps.into_iter().enumerate() {
        let hit = ct.lookup(&pkt).unwrap();
        assert_eq!(ct.update(&hit, flags, t as u64), Some(want));
    }
    let k2 = key(2);
    let hit = ct.insert(k2, k2.reversed(), ACK, 0, 0, 0).unwrap();
    assert_eq!(hit.state, CtState::Established, "mid-stream pickup");
    assert_eq!(ct.update(&hit, RST, 1), Some(CtState::Close));
    assert_eq!(
        ct.insert(key(3), key(3).reversed(), RST, 0, 0, 0),
        Err(InsertError::Invalid)
    );
}

#[test]
fn udp_replied_gets_the_longer_timeout() {
    let t = Timeouts::default();
    let ct = Conntrack::new(16);
    let k = FlowKey {
        proto: Proto::Udp.number(),
        ..key(1)
    };
    let hit = ct.insert(k, k.reversed(), 0, 0, 0, 0).unwrap();
    assert_eq!(hit.state, CtState::UdpUnreplied);
    assert_eq!(ct.reap(t.udp_unreplied - 1, 16), 0);
    let reply = ct.lookup(&k.reversed()).unwrap();
    assert_eq!(ct.update(&reply, 0, 1000), Some(CtState::UdpReplied));
    assert_eq!(
        ct.reap(1000 + t.udp_unreplied, 16),
        0,
        "replied flows live longer"
    );
    assert_eq!(ct.reap(1000 + t.udp_replied, 16), 1);
    assert_eq!(ct.lookup(&k), None);
    assert_eq!(ct.lookup(&k.reversed()), None);
    assert!(ct.is_empty());
}

#[test]
fn a_full_table_refuses_new_flows_keeps_old_ones_and_reuses_freed_entries() {
    let ct = Conntrack::new(64);
    let mut inserted = Vec::new();
    let mut i = 0;
    loop {
        match ct.insert(key(i), key(i).reversed(), ACK, 0, 0, 0) {
            Ok(_) => inserted.push(key(i)),
            Err(InsertError::Full) => break,
            Err(InsertError::BucketsFull) => {}
            Err(e) => panic!("{e:?}"),
        }
        i += 1;
        assert!(i < 10_000);
    }
    assert_eq!(inserted.len(), 64);
    assert_eq!(ct.stats().refused_full, 1);
    for k in &inserted {
        assert!(ct.lookup(k).is_some());
    }
    let victim = ct.lookup(&inserted[5]).unwrap();
    assert!(ct.remove(&victim));
    assert!(!ct.remove(&victim), "removing twice");
    let fresh = key(100_000);
    let hit = ct.insert(fresh, fresh.reversed(), ACK, 0, 0, 0).unwrap();
    assert_eq!(hit.index, victim.index, "the freed entry is reused");
    assert_ne!(hit.version, victim.version);
    assert_eq!(
        ct.update(&victim, ACK, 5),
        None,
        "a stale hit cannot touch the new flow"
    );
    assert_eq!(ct.lookup(&inserted[5]), None);
}

#[test]
fn memory_per_entry_is_at_most_128_bytes() {
    for cap in [1000u32, 1 << 20, 1_250_000] {
        let ct = Conntrack::new(cap);
        let per = ct.memory_bytes() as f64 / f64::from(cap);
        assert!(per <= 128.0, "{per} bytes per entry at capacity {cap}");
    }
}

#[test]
fn concurrent_workers_never_see_torn_entries() {
    let ct = Arc::new(Conntrack::new(1 << 14));
    let clock = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (ct, clock) = (ct.clone(), clock.clone());
            std::thread::spawn(move || {
                let mut inserts = 0u64;
                for round in 0..20_000u32 {
                    let i = (round * 7 + t * 13) % 20_000;
                    let k = key(i);
                    let now = clock.load(Ordering::Relaxed);
                    match ct.lookup(&k) {
                        Some(hit) => {
                            assert_eq!(hit.orig, k);
                            assert_eq!(hit.reply, dnat(&k), "a torn or mixed entry");
                            ct.update(&hit, ACK, now);
                            if round % 5 == 0 {
                                ct.remove(&hit);
                            }
                        }
                        None => {
                            if ct.insert(k, dnat(&k), SYN, 0, 0, now).is_ok() {
                                inserts += 1;
                            }
                        }
                    }
                    if let Some(hit) = ct.lookup(&dnat(&k)) {
                        assert_eq!(hit.orig, k);
                    }
                }
                inserts
            })
        })
        .collect();
    let reaper = {
        let (ct, clock) = (ct.clone(), clock.clone());
        std::thread::spawn(move || {
            for step in 0..200u64 {
                clock.store(step * 10_000, Ordering::Relaxed);
                ct.reap(step * 10_000, 4096);
            }
        })
    };
    let inserts: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    reaper.join().unwrap();
    let s = ct.stats();
    assert_eq!(s.inserts, inserts);
    assert_eq!(u64::from(ct.len()), s.inserts - s.removals, "{s:?}");
    assert_eq!(ct.dump_at(0).len(), ct.len() as usize);
    // Reaping everything empties the index and returns every entry to
    // the free list: the whole capacity can be inserted again.
    ct.reap(u64::MAX / 2, ct.capacity());
    assert!(ct.is_empty(), "{} entries left", ct.len());
    assert!(
        ct.buckets
            .iter()
            .all(|b| b.0.iter().all(|s| s.load(Ordering::Relaxed) == 0)),
        "stale index slots"
    );
    let mut accepted = 0;
    for i in 0..ct.capacity() * 2 {
        let k = FlowKey { src: i, ..key(0) };
        match ct.insert(k, k.reversed(), SYN, 0, 0, 0) {
            Ok(_) => accepted += 1,
            Err(InsertError::Full) => break,
            Err(_) => {}
        }
    }
    assert_eq!(accepted, ct.capacity(), "entries lost from the free list");
}

#[test]
fn a_reply_tuple_held_by_another_flow_is_a_clash_not_the_same_flow() {
    let ct = Conntrack::new(16);
    let backend_reply = FlowKey {
        src: 0x0af4_020a,
        dst: 0x0af4_010b,
        sport: 8080,
        dport: 40_000,
        proto: Proto::Tcp.number(),
    };
    let to_vip1 = FlowKey {
        src: 0x0af4_010b,
        dst: 0x0a60_0014,
        sport: 40_000,
        dport: 80,
        proto: Proto::Tcp.number(),
    };
    let to_vip2 = FlowKey {
        dst: 0x0a60_0015,
        ..to_vip1
    };
    let first = ct.insert(to_vip1, backend_reply, SYN, 0, 0, 0).unwrap();
    match ct.insert(to_vip2, backend_reply, SYN, 0, 0, 0) {
        Err(InsertError::Clash(hit)) => {
            assert_eq!(hit.index, first.index);
            assert_eq!(hit.orig, to_vip1, "the holder is reported");
        }
        other => panic!("expected a clash, got {other:?}"),
    }
    match ct.insert(to_vip1, backend_reply, ACK, 0, 0, 0) {
        Err(InsertError::Exists(hit)) => assert_eq!(hit.dir, Dir::Orig),
        other => panic!("expected the same flow, got {other:?}"),
    }
    // Another source port for the new flow is a tuple of its own.
    let remapped = FlowKey {
        dport: 50_123,
        ..backend_reply
    };
    ct.insert(to_vip2, remapped, SYN, 0, 0, 0).unwrap();
    assert_eq!(ct.len(), 2);
    assert_eq!(ct.lookup(&backend_reply).unwrap().orig, to_vip1);
    assert_eq!(ct.lookup(&remapped).unwrap().orig, to_vip2);
}

#[test]
fn concurrent_inserts_never_share_a_reply_tuple() {
    // Four workers race to insert different flows with one reply tuple; the
    // winner holds it alone until it removes its entry.
    let ct = Arc::new(Conntrack::new(1 << 10));
    let reply = FlowKey {
        src: 0x0af4_020a,
        dst: 0x0af4_010b,
        sport: 8080,
        dport: 40_000,
        proto: Proto::Udp.number(),
    };
    let holders = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (ct, holders) = (ct.clone(), holders.clone());
            std::thread::spawn(move || {
                let (mut won, mut busy) = (0u32, 0u32);
                for round in 0..20_000u32 {
                    let orig = FlowKey {
                        src: 0x0af4_010b,
                        dst: 0x0a60_0000 + t,
                        sport: 40_000,
                        dport: 53,
                        proto: Proto::Udp.number(),
                    };
                    match ct.insert(orig, reply, 0, 0, 0, u64::from(round)) {
                        Ok(hit) => {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            assert_eq!(ct.lookup(&reply).map(|h| h.index), Some(hit.index));
                            holders.fetch_sub(1, Ordering::SeqCst);
                            assert!(ct.remove(&hit));
                            won += 1;
                        }
                        Err(InsertError::Clash(hit)) => assert_eq!(hit.reply, reply),
                        Err(InsertError::Busy) => busy += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                (won, busy)
            })
        })
        .collect();
    let results: Vec<(u32, u32)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().map(|r| r.0).sum::<u32>() > 0);
    assert!(ct.is_empty());
    assert!(
        ct.buckets
            .iter()
            .all(|b| b.0.iter().all(|s| s.load(Ordering::Relaxed) == 0)),
        "a backed-off insert left a slot behind"
    );
}
