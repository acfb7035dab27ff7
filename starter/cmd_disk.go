package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/diskimage"
)

func newDiskCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "Inspect and convert disk images (raw, VHDX and VHDX chains)",
	}
	cmd.AddCommand(newDiskInfoCommand(), newDiskConvertCommand())
	return cmd
}

func newDiskInfoCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info FILE [--output text|json]",
		Short: "Describe a disk image: format, sizes, parent, allocated ranges, partitions, exclusions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd, outputText)
			if err != nil {
				return err
			}
			info, err := diskimage.Describe(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == outputJSON {
				return printJSON(cmd, info)
			}
			var allocated int64
			for _, e := range info.Allocated {
				allocated += e.Length
			}
			fmt.Fprintf(out, "format:              %s\n", info.Format)
			fmt.Fprintf(out, "virtual size:        %s (%d bytes)\n", bytesize.Text(info.VirtualSize), info.VirtualSize)
			if info.BlockSize > 0 {
				fmt.Fprintf(out, "block size:          %s\n", bytesize.Text(info.BlockSize))
			}
			fmt.Fprintf(out, "logical sector size: %d\n", info.LogicalSectorSize)
			if info.Parent != "" {
				fmt.Fprintf(out, "parent:              %s\n", info.Parent)
			}
			fmt.Fprintf(out, "allocated:           %s in %d ranges\n", bytesize.Text(allocated), len(info.Allocated))
			for _, p := range info.Partitions {
				fmt.Fprintf(out, "partition %d:         %s at %d, %s %s\n", p.Index, bytesize.Text(p.Length), p.Offset, p.Type, p.Filesystem)
			}
			var excluded int64
			for _, e := range info.Excluded {
				excluded += e.Length
			}
			if len(info.Excluded) > 0 {
				fmt.Fprintf(out, "excluded:            %s in %d ranges\n", bytesize.Text(excluded), len(info.Excluded))
			}
			return nil
		},
	}
	return cmd
}

func newDiskConvertCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "convert SRC DST",
		Short: "Convert a disk image (raw, VHDX or a VHDX chain) to raw or dynamic VHDX",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format == "" {
				format = diskimage.FormatRaw
				if strings.EqualFold(filepath.Ext(args[1]), ".vhdx") {
					format = diskimage.FormatVHDX
				}
			}
			return diskimage.Convert(cmd.Context(), args[0], args[1], format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: raw or vhdx (default: from DST's extension)")
	return cmd
}
