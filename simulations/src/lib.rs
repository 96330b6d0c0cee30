//! cocoon-sim: the network simulator. It will drive `cocoon-protocol`'s state machines on a
//! simulated clock (issue 7); until the protocol crate holds announcements, routing and
//! sessions there is nothing of ours for it to drive, so this crate has no binary yet.
