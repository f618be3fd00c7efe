//! Small HTTP targets on 127.0.0.1 for the source connector's tests.
//! (Filled in by the source connector's tests.)
