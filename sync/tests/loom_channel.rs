//! loom models of the channel engine and select.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test -p filament-sync --release`
#![cfg(loom)]

use std::time::Duration;

use filament_sync::channel::{
    bounded, unbounded, RecvArm, RecvError, RecvTimeoutError, Select, SendArm,
};
use loom::thread;

/// A blocking sender on a full buffer and a receiver: order is kept, nothing lost.
#[test]
fn bounded_one_order() {
    loom::model(|| {
        let (tx, rx) = bounded(1);
        let h = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
        });
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv(), Err(RecvError));
        h.join().unwrap();
    });
}

/// Two senders, one receiver: per-sender order, and disconnection after both are gone.
#[test]
fn unbounded_two_senders() {
    loom::model(|| {
        let (tx, rx) = unbounded();
        let tx2 = tx.clone();
        let h = thread::spawn(move || {
            tx2.send(10).unwrap();
            tx2.send(11).unwrap();
        });
        tx.send(20).unwrap();
        drop(tx);
        let got: Vec<i32> = rx.iter().collect();
        h.join().unwrap();
        assert_eq!(got.len(), 3);
        let a: Vec<_> = got.iter().filter(|&&v| v < 20).collect();
        assert_eq!(a, [&10, &11]);
    });
}

/// Rendezvous: send completes only when the receiver took the value.
#[test]
fn rendezvous() {
    loom::model(|| {
        let (tx, rx) = bounded(0);
        let h = thread::spawn(move || {
            tx.send(5).unwrap();
        });
        assert_eq!(rx.recv(), Ok(5));
        h.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

/// Blocked receiver woken by the last sender's drop.
#[test]
fn disconnect_wakes_receiver() {
    loom::model(|| {
        let (tx, rx) = bounded::<i32>(0);
        let h = thread::spawn(move || drop(tx));
        assert_eq!(rx.recv(), Err(RecvError));
        h.join().unwrap();
    });
}

/// Blocked sender woken by the last receiver's drop, getting its value back.
#[test]
fn disconnect_wakes_sender() {
    loom::model(|| {
        let (tx, rx) = bounded::<i32>(0);
        let h = thread::spawn(move || drop(rx));
        assert_eq!(tx.send(3).unwrap_err().into_inner(), 3);
        h.join().unwrap();
    });
}

/// A timed receive racing a send on a buffered channel: the value is received exactly once.
#[test]
fn recv_timeout_races_send() {
    loom::model(|| {
        let (tx, rx) = bounded(1);
        let h = thread::spawn(move || tx.send(1).unwrap());
        let first = rx.recv_timeout(Duration::from_millis(1));
        h.join().unwrap();
        match first {
            Ok(v) => {
                assert_eq!(v, 1);
                assert!(rx.try_recv().unwrap_err().is_disconnected());
            }
            Err(RecvTimeoutError::Timeout) => assert_eq!(rx.try_recv(), Ok(1)),
            Err(e) => panic!("{e}"),
        }
    });
}

/// Timed send and timed receive on a rendezvous: both succeed or both fail.
#[test]
fn rendezvous_timeouts_agree() {
    loom::model(|| {
        let (tx, rx) = bounded(0);
        let h = thread::spawn(move || tx.send_timeout(7, Duration::from_millis(1)).is_ok());
        let got = rx.recv_timeout(Duration::from_millis(1));
        let sent = h.join().unwrap();
        match got {
            Ok(v) => {
                assert_eq!(v, 7);
                assert!(sent);
            }
            Err(_) => assert!(!sent),
        }
    });
}

/// A select over two channels, each fed by one sender: exactly one value is selected and the
/// other stays receivable.
#[test]
fn select_two_recv() {
    loom::model(|| {
        let (tx1, rx1) = bounded(1);
        let (tx2, rx2) = bounded(1);
        let h1 = thread::spawn(move || tx1.send(1).unwrap());
        let h2 = thread::spawn(move || tx2.send(2).unwrap());
        let (a, b) = (RecvArm::new(&rx1), RecvArm::new(&rx2));
        let mut sel = Select::new();
        sel.recv(&a);
        sel.recv(&b);
        let i = sel.select();
        drop(sel);
        h1.join().unwrap();
        h2.join().unwrap();
        if i == 0 {
            assert_eq!(a.into_result(), Ok(1));
            assert_eq!(rx2.recv(), Ok(2));
        } else {
            assert_eq!(b.into_result(), Ok(2));
            assert_eq!(rx1.recv(), Ok(1));
        }
    });
}

/// A select send arm on a rendezvous meets a plain receiver; a second arm that never becomes
/// ready is left untouched.
#[test]
fn select_send_rendezvous() {
    loom::model(|| {
        let (tx, rx) = bounded(0);
        let (_tx2, rx2) = bounded::<i32>(0);
        let h = thread::spawn(move || rx.recv());
        let s = SendArm::new(&tx, 9);
        let r = RecvArm::new(&rx2);
        let mut sel = Select::new();
        sel.send(&s);
        sel.recv(&r);
        assert_eq!(sel.select(), 0);
        drop(sel);
        assert!(s.into_result().is_ok());
        assert_eq!(h.join().unwrap(), Ok(9));
    });
}

/// select-vs-select on one rendezvous channel: one sends, one receives.
#[test]
fn select_vs_select_rendezvous() {
    loom::model(|| {
        let (tx, rx) = bounded(0);
        let h = thread::spawn(move || {
            let r = RecvArm::new(&rx);
            let mut sel = Select::new();
            sel.recv(&r);
            sel.select();
            drop(sel);
            r.into_result()
        });
        let s = SendArm::new(&tx, 4);
        let mut sel = Select::new();
        sel.send(&s);
        sel.select();
        drop(sel);
        assert!(s.into_result().is_ok());
        assert_eq!(h.join().unwrap(), Ok(4));
    });
}

/// A select with a timeout racing a send: the value is taken at most once and otherwise stays.
#[test]
fn select_timeout_races_send() {
    loom::model(|| {
        let (tx, rx) = bounded(1);
        let h = thread::spawn(move || tx.send(1).unwrap());
        let a = RecvArm::new(&rx);
        let mut sel = Select::new();
        sel.recv(&a);
        let got = sel.select_timeout(Duration::from_millis(1));
        drop(sel);
        h.join().unwrap();
        match got {
            Some(_) => assert_eq!(a.into_result(), Ok(1)),
            None => assert_eq!(rx.recv(), Ok(1)),
        }
    });
}

/// try_send on a rendezvous completes against a blocked select (its recv arm is an offer).
#[test]
fn try_send_to_select() {
    loom::model(|| {
        let (tx, rx) = bounded(0);
        let h = thread::spawn(move || {
            let r = RecvArm::new(&rx);
            let mut sel = Select::new();
            sel.recv(&r);
            let i = sel.select_timeout(Duration::from_millis(1));
            drop(sel);
            i.map(|_| r.into_result())
        });
        let sent = tx.try_send(1).is_ok();
        let got = h.join().unwrap();
        assert_eq!(sent, got == Some(Ok(1)));
    });
}
