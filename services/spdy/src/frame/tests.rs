//! Framing tests: round trips of every frame type, hostile lengths, bad versions.

use super::*;

fn round_trip(frames: &[Frame]) {
    let mut writer = HeaderCompressor::new();
    let mut reader = HeaderDecompressor::new();
    for frame in frames {
        let bytes = encode(frame, &mut writer).unwrap();
        let head = FrameHead::parse(bytes[..8].try_into().unwrap());
        let payload = Bytes::copy_from_slice(&bytes[8..]);
        assert_eq!(&decode(head, payload, &mut reader).unwrap(), frame);
    }
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_frame_type_round_trips() {
    round_trip(&[
        Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 7,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            headers: h(&[("streamtype", "error"), ("port", "8080")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Vec::new(),
        },
        Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: h(&[("a", "b\0c")]),
        },
        Frame::RstStream {
            stream_id: 5,
            status: rst::CANCEL,
        },
        Frame::Settings {
            flags: 1,
            entries: vec![Setting {
                flags: 1,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        },
        Frame::Ping { id: 0xdead_beef },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: goaway::PROTOCOL_ERROR,
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 0x7fff_ffff,
        },
        Frame::Data {
            stream_id: 7,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Data {
            stream_id: 7,
            flags: 0,
            data: Bytes::new(),
        },
    ]);
}

#[test]
fn wire_layout_matches_the_spec() {
    let mut writer = HeaderCompressor::new();
    let ping = encode(&Frame::Ping { id: 1 }, &mut writer).unwrap();
    assert_eq!(ping, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
    let data = encode(
        &Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        },
        &mut writer,
    )
    .unwrap();
    assert_eq!(data, [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
    let update = encode(
        &Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        },
        &mut writer,
    )
    .unwrap();
    assert_eq!(update, [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]);
}

#[test]
fn unknown_control_frames_are_ignorable() {
    let head = FrameHead::parse([0x80, 3, 0, 10, 0, 0, 0, 2]);
    let frame = decode(
        head,
        Bytes::from_static(b"xx"),
        &mut HeaderDecompressor::new(),
    );
    assert_eq!(frame.unwrap(), Frame::Unknown { frame_type: 10 });
}

#[test]
fn bad_versions_are_refused() {
    for version in [2u8, 4] {
        let head = FrameHead::parse([0x80, version, 0, 6, 0, 0, 0, 4]);
        assert!(matches!(
            head.check(),
            Err(FrameError::UnsupportedVersion(v)) if v == u16::from(version)
        ));
    }
}

#[tokio::test]
async fn hostile_lengths_are_refused_before_allocating() {
    // a control frame claiming 16 MiB, with nothing behind it
    let mut io: &[u8] = &[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff];
    let err = read_frame(&mut io, &mut HeaderDecompressor::new())
        .await
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    // a data frame over the limit
    let mut io: &[u8] = &[0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
    let err = read_frame(&mut io, &mut HeaderDecompressor::new())
        .await
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    // a frame cut short
    let mut io: &[u8] = &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0];
    let err = read_frame(&mut io, &mut HeaderDecompressor::new())
        .await
        .unwrap_err();
    assert!(matches!(err, FrameError::Io(_)), "{err}");
}

#[test]
fn short_and_long_payloads_are_malformed() {
    let mut reader = HeaderDecompressor::new();
    // RST_STREAM with 4 bytes instead of 8
    let head = FrameHead::parse([0x80, 3, 0, 3, 0, 0, 0, 4]);
    assert!(decode(head, Bytes::from_static(&[0, 0, 0, 1]), &mut reader).is_err());
    // PING with 8 bytes instead of 4
    let head = FrameHead::parse([0x80, 3, 0, 6, 0, 0, 0, 8]);
    assert!(decode(head, Bytes::from_static(&[0; 8]), &mut reader).is_err());
    // SETTINGS whose count claims more entries than it holds
    let head = FrameHead::parse([0x80, 3, 0, 4, 0, 0, 0, 4]);
    assert!(decode(
        head,
        Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]),
        &mut reader
    )
    .is_err());
    // SYN_STREAM shorter than its fixed fields
    let head = FrameHead::parse([0x80, 3, 0, 1, 0, 0, 0, 3]);
    assert!(decode(head, Bytes::from_static(&[0, 0, 1]), &mut reader).is_err());
}

#[test]
fn hostile_header_blocks_are_refused() {
    // a count of 2^32-1 pairs in 4 bytes
    assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
    // a name length past the end
    assert!(parse_header_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
    // an empty name
    assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // bytes after the last pair
    assert!(parse_header_block(&[0, 0, 0, 0, 1]).is_err());
    // not UTF-8
    assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]).is_err());
    let block = encode_header_block(&h(&[("StreamType", "stdout")]));
    assert_eq!(
        parse_header_block(&block).unwrap(),
        h(&[("streamtype", "stdout")])
    );
}
