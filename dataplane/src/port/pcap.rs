//! A port wrapper that records every frame received and sent in the classic
//! pcap format (readable by tcpdump and Wireshark), for debugging and tests.
//! It writes through a buffer but still copies each frame: not for
//! production traffic rates.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Port;
use crate::frame::{Desc, FramePool};

/// Writes pcap records (microsecond timestamps, link type Ethernet).
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        header[16..20].copy_from_slice(&65535u32.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    /// Writes one frame with the current time.
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let caplen = len.min(65535);
        let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
        rec[8..12].copy_from_slice(&caplen.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&frame[..caplen as usize])
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Any port, recording both directions to a pcap writer. Write errors are
/// counted, not fatal: recording must never stop forwarding.
pub struct PcapPort<P: Port, W: Write + Send> {
    inner: P,
    writer: PcapWriter<W>,
    /// Frames that could not be recorded.
    pub write_errors: u64,
}

impl<P: Port, W: Write + Send> PcapPort<P, W> {
    /// Records `inner`'s traffic to `writer`.
    pub fn new(inner: P, writer: PcapWriter<W>) -> Self {
        PcapPort {
            inner,
            writer,
            write_errors: 0,
        }
    }

    /// The wrapped port and the writer (flushed).
    pub fn into_parts(self) -> io::Result<(P, W)> {
        Ok((self.inner, self.writer.into_inner()?))
    }

    fn record(&mut self, pool: &FramePool, descs: &[Desc]) {
        for d in descs {
            let ok = pool
                .data(*d)
                .is_some_and(|data| self.writer.write(data).is_ok());
            if !ok {
                self.write_errors += 1;
            }
        }
    }
}

impl<P: Port, W: Write + Send> Port for PcapPort<P, W> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        let n = self.inner.recv(pool, out);
        self.record(pool, &out[..n]);
        n
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        // Record before sending: the frames belong to the port afterwards.
        self.record(pool, descs);
        self.inner.send(pool, descs)
    }

    fn service(&mut self, pool: &mut FramePool) {
        self.inner.service(pool)
    }

    fn poll_fd(&self) -> Option<i32> {
        self.inner.poll_fd()
    }

    fn in_flight(&self) -> u32 {
        self.inner.in_flight()
    }

    fn close(&mut self, pool: &mut FramePool) {
        self.inner.close(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::MemPort;

    #[test]
    fn records_in_pcap_format() {
        let mut pool = FramePool::new(4);
        let (mem, handle) = MemPort::new("p0");
        let mut port = PcapPort::new(mem, PcapWriter::new(Vec::new()).unwrap());
        handle.inject(&[0xaa; 60]);
        let mut descs = [Desc::default(); 4];
        let n = port.recv(&mut pool, &mut descs);
        port.send(&mut pool, &descs[..n]);
        let (_, bytes) = port.into_parts().unwrap();
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(bytes.len(), 24 + 2 * (16 + 60));
        assert_eq!(
            u32::from_le_bytes(bytes[24 + 8..24 + 12].try_into().unwrap()),
            60
        );
        assert_eq!(&bytes[24 + 16..24 + 16 + 60], &[0xaa; 60][..]);
    }
}
