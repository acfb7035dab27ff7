//go:build windows

package hyperv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// smbSession opens one SMB session per share with the host's account
// (WNetAddConnection2W without a local drive letter, learn.microsoft.com,
// winnetwk/nf-winnetwk-wnetaddconnection2w), so that the files of a remote
// host are read with the credentials of its configuration.
type smbSession struct {
	user, password string
	mu             sync.Mutex
	open           map[string]bool
}

var (
	mpr                    = windows.NewLazySystemDLL("mpr.dll")
	procWNetAddConnection2 = mpr.NewProc("WNetAddConnection2W")
)

// netResource is NETRESOURCEW.
type netResource struct {
	Scope       uint32
	Type        uint32
	DisplayType uint32
	Usage       uint32
	LocalName   *uint16
	RemoteName  *uint16
	Comment     *uint16
	Provider    *uint16
}

const (
	resourceTypeDisk = 1 // RESOURCETYPE_DISK
	// Errors of WNetAddConnection2 that mean the account was refused.
	errorAccessDenied      = 5    // ERROR_ACCESS_DENIED
	errorLogonFailure      = 1326 // ERROR_LOGON_FAILURE
	errorSessionCredential = 1219 // ERROR_SESSION_CREDENTIAL_CONFLICT
)

func (s *smbSession) connect(ctx context.Context, share string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[share] {
		return nil
	}
	remote, err := windows.UTF16PtrFromString(share)
	if err != nil {
		return err
	}
	user, err := windows.UTF16PtrFromString(s.user)
	if err != nil {
		return err
	}
	password, err := windows.UTF16PtrFromString(s.password)
	if err != nil {
		return err
	}
	nr := netResource{Type: resourceTypeDisk, RemoteName: remote}
	r, _, _ := procWNetAddConnection2.Call(uintptr(unsafe.Pointer(&nr)), uintptr(unsafe.Pointer(password)), uintptr(unsafe.Pointer(user)), 0)
	switch r {
	case 0:
		s.open[share] = true
		return nil
	case errorAccessDenied, errorLogonFailure, errorSessionCredential:
		return fmt.Errorf("%w: %v", errShareRefused, windows.Errno(r))
	default:
		return errors.New(windows.Errno(r).Error())
	}
}
