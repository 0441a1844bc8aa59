//! Microbenchmarks of the hot paths (issue: performance), each beside the bare
//! HMAC-SHA3-512 of the same bytes, so a report can state how close a path is
//! to the MAC's own cost:
//!
//! - decode + verify + parse of a client `CH_MSG` frame (what a reader does);
//! - encode + sign of a server `CH_MSG` frame (what a writer does per recipient);
//! - msgpack of the hot commands and events alone.
//!
//! Run: `cargo bench --bench hot_paths` (criterion; reports in target/criterion).

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sigil_proto::event::{ChMsg, ChMsgAck, ChMsgCommit, Outbound};
use sigil_proto::wire::multimac::{sign_many_with, Impl, KeyedStates};
use sigil_proto::wire::{encode_frame, CommandName, FrameCodec, FrameMac, OutFrame, SecretKey};
use sigil_proto::{Body, Command, Envelope, Request};
use tokio_util::codec::Decoder;
use ulid::Ulid;

fn client_ch_msg(key: &SecretKey, body: usize) -> Vec<u8> {
    let req = Request {
        envelope: Envelope { nonce: u64::MAX - 7, timestamp: 1_800_000_000 },
        command: Command::ChMsg {
            id: Ulid::from(1u128),
            msg_id: Ulid::from(2u128),
            msg: Body::binary(vec![7u8; body]),
        },
    };
    let mut buf = BytesMut::new();
    sigil_proto::command::write_request(Some(&key.mac()), &req, &mut buf);
    buf.to_vec()
}

fn bench_mac(c: &mut Criterion) {
    let key = SecretKey::from_bytes([3; 32]);
    let mac = key.mac();
    let mut g = c.benchmark_group("hmac_sha3_512");
    for len in [64usize, 200, 1024] {
        let data = vec![1u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("sign_{len}B"), |b| b.iter(|| mac.sign(b"CH_MSG", black_box(&data))));
    }
    g.bench_function("key_schedule", |b| b.iter(|| black_box(&key).mac()));
    g.finish();
}

fn bench_inbound(c: &mut Criterion) {
    let key = SecretKey::from_bytes([3; 32]);
    let mac = key.mac();
    let mut g = c.benchmark_group("inbound");
    for body in [128usize, 1024] {
        let frame = client_ch_msg(&key, body);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("decode_{body}B"), |b| {
            b.iter_batched(
                || BytesMut::from(&frame[..]),
                |mut buf| FrameCodec::new(65_536).decode(&mut buf).ok().flatten(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("decode_verify_parse_{body}B"), |b| {
            b.iter_batched(
                || BytesMut::from(&frame[..]),
                |mut buf| {
                    let f = FrameCodec::new(65_536).decode(&mut buf).ok().flatten()?;
                    let tag = f.signature?;
                    mac.verify(f.command.as_bytes(), &f.payload, &tag).then_some(())?;
                    Request::parse(&f.command, &f.payload).ok()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_outbound(c: &mut Criterion) {
    let key = SecretKey::from_bytes([5; 32]);
    let mac = key.mac();
    let mut g = c.benchmark_group("outbound");
    for body in [128usize, 1024] {
        let event = ChMsg {
            id: Ulid::from(1u128),
            msg_id: Ulid::from(2u128),
            msg: Body::binary(vec![7u8; body]),
            from: Ulid::from(3u128),
            timestamp: 1_800_000_000,
            recipients: 200,
        };
        let frame = Outbound::event(&event);
        g.throughput(Throughput::Bytes(frame.payload.len() as u64));
        // Once per message: encode the event.
        g.bench_function(format!("encode_event_{body}B"), |b| b.iter(|| Outbound::event(black_box(&event))));
        // Once per recipient: sign and write the shared payload.
        g.bench_function(format!("sign_and_frame_{body}B"), |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                let tag = mac.sign(frame.command.as_bytes(), &frame.payload);
                encode_frame(
                    &OutFrame { command: frame.command, signature: Some(&tag), payload: &frame.payload },
                    &mut buf,
                );
                buf.len()
            })
        });
    }
    g.finish();
}

fn bench_msgpack(c: &mut Criterion) {
    let mut g = c.benchmark_group("msgpack");
    let ack = Request {
        envelope: Envelope { nonce: 9, timestamp: 1_800_000_000 },
        command: Command::AckChMsg { id: Ulid::from(2u128), ids: Vec::new() },
    };
    let (_, ack_payload) = ack.encode();
    let ack_payload = Bytes::from(ack_payload);
    let ack_name = CommandName::new(b"ACK_CH_MSG").unwrap_or_else(|| unreachable!());
    g.bench_function("parse_ack_ch_msg", |b| b.iter(|| Request::parse(&ack_name, black_box(&ack_payload)).ok()));
    let msg = Request {
        envelope: Envelope { nonce: 9, timestamp: 1_800_000_000 },
        command: Command::ChMsg { id: Ulid::from(1u128), msg_id: Ulid::from(2u128), msg: Body::binary(vec![7u8; 128]) },
    };
    let (_, msg_payload) = msg.encode();
    let msg_payload = Bytes::from(msg_payload);
    let msg_name = CommandName::new(b"CH_MSG").unwrap_or_else(|| unreachable!());
    g.bench_function("parse_ch_msg_128B", |b| b.iter(|| Request::parse(&msg_name, black_box(&msg_payload)).ok()));
    let ack_event = ChMsgAck { id: Ulid::from(2u128), user: Ulid::from(4u128), users: Vec::new(), ids: Vec::new() };
    g.bench_function("encode_ch_msg_ack", |b| b.iter(|| Outbound::event(black_box(&ack_event))));
    let commit = ChMsgCommit {
        id: Ulid::from(2u128),
        channel: Ulid::from(1u128),
        acks: (0..101u128).map(Ulid::from).collect(),
        ids: Vec::new(),
    };
    g.bench_function("encode_ch_msg_commit_101_acks", |b| b.iter(|| Outbound::event(black_box(&commit))));
    g.finish();
}

/// One frame signed for 200 recipients: key by key (what a writer does per
/// frame) against the multi-lane `sign_many` on each path this CPU has.
fn bench_fanout_sign(c: &mut Criterion) {
    const KEYS: u8 = 200;
    let macs: Vec<FrameMac> = (0..KEYS).map(|i| SecretKey::from_bytes([i; 32]).mac()).collect();
    let keyed: Vec<KeyedStates> = (0..KEYS).map(|i| KeyedStates::new(&[i; 32])).collect();
    let keys: Vec<&KeyedStates> = keyed.iter().collect();
    for len in [64usize, 200] {
        let payload = vec![1u8; len];
        let parts: [&[u8]; 3] = [b"CH_MSG", b"\n", &payload];
        let mut g = c.benchmark_group(format!("sign_200_recipients_{len}B"));
        g.throughput(Throughput::Elements(KEYS as u64));
        g.bench_function("one_by_one", |b| {
            b.iter(|| macs.iter().map(|m| m.sign(b"CH_MSG", black_box(&payload))).collect::<Vec<_>>())
        });
        for imp in Impl::ALL.into_iter().filter(|i| i.is_available()) {
            g.bench_function(imp.name(), |b| {
                let mut out = Vec::with_capacity(KEYS as usize);
                b.iter(|| {
                    out.clear();
                    sign_many_with(imp, &keys, black_box(&parts), &mut out).expect("available");
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_mac, bench_inbound, bench_outbound, bench_msgpack, bench_fanout_sign);
criterion_main!(benches);
