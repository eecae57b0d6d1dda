//! The [`select!`](crate::select) macro: syntax over [`Select`](super::Select).

/// Waits on several channel operations and runs the body of the one that completes.
///
/// ```text
/// select! {
///     recv(rx) -> msg => body,          // msg: Result<T, RecvError>
///     send(tx, value) -> res => body,   // res: Result<(), SendError<T>>
///     default => body,                  // optional: run if no arm is ready now
///     timeout(duration) => body,        // optional (instead of default): give up after duration
/// }
/// ```
///
/// * Among arms that are ready at the same time, one is picked at random (fairness).
/// * Every `send` value is evaluated once, before the select waits (as in Go); if its arm is
///   not the one selected, the value is dropped.
/// * Bodies run outside any loop or closure of the macro, so `break`, `continue`, `return` and
///   `?` in them refer to the enclosing code.
/// * At most 32 operation arms.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use std::time::Duration;
/// use filament_sync::{channel, select};
///
/// let (tx1, rx1) = channel::unbounded::<i32>();
/// let (_tx2, rx2) = channel::unbounded::<String>();
/// tx1.send(1).unwrap();
/// let got = select! {
///     recv(rx1) -> msg => msg.unwrap(),
///     recv(rx2) -> msg => msg.unwrap().len() as i32,
///     timeout(Duration::from_secs(1)) => -1,
/// };
/// assert_eq!(got, 1);
/// ```
#[macro_export]
macro_rules! select {
    ($($tokens:tt)*) => {
        $crate::__select_internal!(
            @parse [] [] ($($tokens)*)
            (__a0 __a1 __a2 __a3 __a4 __a5 __a6 __a7 __a8 __a9 __a10 __a11 __a12 __a13 __a14
             __a15 __a16 __a17 __a18 __a19 __a20 __a21 __a22 __a23 __a24 __a25 __a26 __a27
             __a28 __a29 __a30 __a31)
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_internal {
    // ---- parsing: one arm at a time into [arms] [special] ----
    (@parse $arms:tt $special:tt () $ids:tt) => {
        $crate::__select_internal!(@emit $arms $special)
    };
    (@parse [$($arms:tt)*] $special:tt
        (recv($r:expr) -> $p:pat => $body:block $(,)? $($rest:tt)*) ($id:ident $($ids:ident)*)) => {
        $crate::__select_internal!(@parse
            [$($arms)* ($id ($crate::channel::RecvArm::new(&$r)) ($p) ($body))]
            $special ($($rest)*) ($($ids)*))
    };
    (@parse [$($arms:tt)*] $special:tt
        (recv($r:expr) -> $p:pat => $body:expr $(, $($rest:tt)*)?) ($id:ident $($ids:ident)*)) => {
        $crate::__select_internal!(@parse
            [$($arms)* ($id ($crate::channel::RecvArm::new(&$r)) ($p) ($body))]
            $special ($($($rest)*)?) ($($ids)*))
    };
    (@parse [$($arms:tt)*] $special:tt
        (send($s:expr, $v:expr) -> $p:pat => $body:block $(,)? $($rest:tt)*)
        ($id:ident $($ids:ident)*)) => {
        $crate::__select_internal!(@parse
            [$($arms)* ($id ($crate::channel::SendArm::new(&$s, $v)) ($p) ($body))]
            $special ($($rest)*) ($($ids)*))
    };
    (@parse [$($arms:tt)*] $special:tt
        (send($s:expr, $v:expr) -> $p:pat => $body:expr $(, $($rest:tt)*)?)
        ($id:ident $($ids:ident)*)) => {
        $crate::__select_internal!(@parse
            [$($arms)* ($id ($crate::channel::SendArm::new(&$s, $v)) ($p) ($body))]
            $special ($($($rest)*)?) ($($ids)*))
    };
    (@parse $arms:tt [] (default => $body:block $(,)? $($rest:tt)*) $ids:tt) => {
        $crate::__select_internal!(@parse $arms [default ($body)] ($($rest)*) $ids)
    };
    (@parse $arms:tt [] (default => $body:expr $(, $($rest:tt)*)?) $ids:tt) => {
        $crate::__select_internal!(@parse $arms [default ($body)] ($($($rest)*)?) $ids)
    };
    (@parse $arms:tt [] (timeout($d:expr) => $body:block $(,)? $($rest:tt)*) $ids:tt) => {
        $crate::__select_internal!(@parse $arms [timeout ($d) ($body)] ($($rest)*) $ids)
    };
    (@parse $arms:tt [] (timeout($d:expr) => $body:expr $(, $($rest:tt)*)?) $ids:tt) => {
        $crate::__select_internal!(@parse $arms [timeout ($d) ($body)] ($($($rest)*)?) $ids)
    };
    (@parse $arms:tt [$($special:tt)+] (default $($rest:tt)*) $ids:tt) => {
        compile_error!("select!: at most one `default` or `timeout` arm")
    };
    (@parse $arms:tt [$($special:tt)+] (timeout $($rest:tt)*) $ids:tt) => {
        compile_error!("select!: at most one `default` or `timeout` arm")
    };
    (@parse $arms:tt $special:tt ($($rest:tt)+) ()) => {
        compile_error!("select!: too many arms (at most 32)")
    };
    (@parse $arms:tt $special:tt ($($rest:tt)+) $ids:tt) => {
        compile_error!(concat!(
            "select!: expected `recv(r) -> pat => body`, `send(s, v) -> pat => body`, ",
            "`default => body` or `timeout(d) => body`, found: ",
            stringify!($($rest)+)
        ))
    };

    // ---- code generation ----
    (@emit [$(($id:ident ($arm:expr) ($p:pat) ($body:expr)))*] $special:tt) => {{
        $( let $id = $arm; )*
        let _completed: ::std::option::Option<usize> = {
            let mut __filament_sel = $crate::channel::Select::new();
            $( $crate::channel::__SelectAdd::add_to(&$id, &mut __filament_sel); )*
            $crate::__select_internal!(@run __filament_sel $special)
        };
        $( if $id.is_selected() {
            let $p = $id.into_result();
            $body
        } else )* {
            $crate::__select_internal!(@fallback $special)
        }
    }};
    (@run $sel:ident []) => { ::std::option::Option::Some($sel.select()) };
    (@run $sel:ident [default ($body:expr)]) => { $sel.try_select() };
    (@run $sel:ident [timeout ($d:expr) ($body:expr)]) => { $sel.select_timeout($d) };
    (@fallback []) => { ::std::unreachable!("select! completed no arm") };
    (@fallback [default ($body:expr)]) => { $body };
    (@fallback [timeout ($d:expr) ($body:expr)]) => { $body };
}
