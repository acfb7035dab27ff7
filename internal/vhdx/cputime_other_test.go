//go:build !linux

package vhdx

func processCPU() int64 { return 0 }
