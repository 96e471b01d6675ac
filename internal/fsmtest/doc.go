// Package fsmtest gives tests outside fsm a real state machine: an FSM over a bbolt store in the
// test's temporary directory, closed at the end of the test. See DESIGN.md.
package fsmtest
