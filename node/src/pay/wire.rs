//! `/cocoon/channel/1`: one request and one response per libp2p stream, each a 4-byte
//! big-endian length and a protobuf message (`protocol/proto/channel.proto`).

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use prost::Message;

/// The protocol id of channel requests.
pub const CHANNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/cocoon/channel/1");

/// Largest frame accepted (a storage BoC is well under 1 KiB).
pub const MAX_FRAME: usize = 65_536;

/// Writes `msg` as one frame.
pub async fn write_frame<S, M>(stream: &mut S, msg: &M) -> anyhow::Result<()>
where
    S: futures::AsyncWrite + Unpin,
    M: Message,
{
    let body = msg.encode_to_vec();
    anyhow::ensure!(body.len() <= MAX_FRAME, "channel message too large");
    let len = u32::try_from(body.len()).map_err(|_| anyhow::anyhow!("frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it as `M`.
pub async fn read_frame<S, M>(stream: &mut S) -> anyhow::Result<M>
where
    S: futures::AsyncRead + Unpin,
    M: Message + Default,
{
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    anyhow::ensure!(
        len <= MAX_FRAME,
        "channel frame of {len} bytes exceeds {MAX_FRAME}"
    );
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    M::decode(body.as_slice()).map_err(|e| anyhow::anyhow!("channel message does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::proto::channel::{ChannelRequest, CloseProposal, channel_request};

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let req = ChannelRequest {
            kind: Some(channel_request::Kind::Close(CloseProposal {
                channel_id: vec![7; 16],
                balance_a_nanoton: 5,
                balance_b_nanoton: 6,
                seqno_a: 1,
                seqno_b: 2,
            })),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).await.expect("write");
        let back: ChannelRequest = read_frame(&mut buf.as_slice()).await.expect("read");
        assert_eq!(back, req);

        let mut huge = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        huge.extend(std::iter::repeat_n(0u8, 16));
        let err = read_frame::<_, ChannelRequest>(&mut huge.as_slice())
            .await
            .expect_err("too large");
        assert!(err.to_string().contains("exceeds"), "{err}");

        let truncated = &buf[..buf.len() - 1];
        assert!(
            read_frame::<_, ChannelRequest>(&mut &truncated[..])
                .await
                .is_err()
        );
    }
}
