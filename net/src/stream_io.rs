//! `Read`/`Write` for the stream sockets (`TcpStream`, `UnixStream`), written once.
//!
//! Every blocking read or write is `#[track_caller]` so that `Runtime::dump` names the user's
//! call site; `read_exact`/`write_all` are overridden for the same reason (std's provided
//! versions would report a line inside std).

/// Implements `read_at`/`write_at` and `Read`/`Write` for `$ty` and `&$ty`, where `$ty` has a
/// field `s: Socket<_>` whose inner type implements `Read`/`Write` for `&_`; `$read`/`$write`
/// are the names blocking calls show in `Runtime::dump`.
macro_rules! impl_stream_io {
    ($ty:ident, $read:expr, $write:expr) => {
        impl $ty {
            /// One read, recording `site` if it waits. A read shorter than `buf` (and not
            /// EOF) emptied the socket's receive buffer.
            fn read_at(&self, buf: &mut [u8], site: Site) -> io::Result<usize> {
                let len = buf.len();
                self.s.io_drain(
                    Interest::READABLE,
                    Timeout::Read,
                    site,
                    |mut s| s.read(buf),
                    |&n| n > 0 && n < len,
                )
            }

            /// One write, recording `site` if it waits. A write shorter than `buf` filled the
            /// socket's send buffer.
            fn write_at(&self, buf: &[u8], site: Site) -> io::Result<usize> {
                self.s.io_drain(
                    Interest::WRITABLE,
                    Timeout::Write,
                    site,
                    |mut s| s.write(buf),
                    |&n| n < buf.len(),
                )
            }
        }

        /// Blocking reads show in `Runtime::dump` as waiting on `"...::read"` at the caller's
        /// location (`read_exact` included; other provided methods report their own call of `read`).
        impl Read for &$ty {
            #[track_caller]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.read_at(buf, Site::here($read))
            }

            #[track_caller]
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                self.s.io(
                    Interest::READABLE,
                    Timeout::Read,
                    Site::here($read),
                    |mut s| s.read_vectored(bufs),
                )
            }

            #[track_caller]
            fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
                let site = Site::here($read);
                read_exact(buf, |b| self.read_at(b, site))
            }
        }

        /// Blocking writes show in `Runtime::dump` as waiting on `"...::write"` at the caller's
        /// location (`write_all` included).
        impl Write for &$ty {
            #[track_caller]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_at(buf, Site::here($write))
            }

            #[track_caller]
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.s.io(
                    Interest::WRITABLE,
                    Timeout::Write,
                    Site::here($write),
                    |mut s| s.write_vectored(bufs),
                )
            }

            #[track_caller]
            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                let site = Site::here($write);
                write_all(buf, |b| self.write_at(b, site))
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Read for $ty {
            #[track_caller]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }

            #[track_caller]
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }

            #[track_caller]
            fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
                (&*self).read_exact(buf)
            }
        }

        impl Write for $ty {
            #[track_caller]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            #[track_caller]
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            #[track_caller]
            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                (&*self).write_all(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

pub(crate) use impl_stream_io;
