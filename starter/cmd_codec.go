package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/temporalclient"
)

// newCodecCommand serves the payload codec to the Temporal Web UI: with
// temporal.codecKeyFile set, the cluster holds only encrypted payloads, and
// the UI shows them to an operator only through this endpoint, which holds
// the key. It listens on loopback unless told otherwise.
func newCodecCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "codec", Short: "Serve the payload codec to the Temporal Web UI"}
	var listen, origin, tokenFile string
	serve := &cobra.Command{
		Use:   "serve [--listen ADDR] [--origin URL] [--token-file F]",
		Short: "Decode (and encode) payloads for the Web UI with temporal.codecKeyFile",
		Long: "Serves POST /decode and /encode (the Temporal codec server protocol) with the key\n" +
			"of temporal.codecKeyFile. Set the Web UI's codec endpoint (Settings > Codec Server,\n" +
			"or TEMPORAL_CODEC_ENDPOINT of the UI server) to http://ADDR. Only requests from\n" +
			"--origin (the UI's URL) are answered; with --token-file, only those that carry\n" +
			"'Authorization: Bearer <token>' (the UI passes the user's access token when\n" +
			"'pass access token' is set).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if cfg.Temporal.CodecKeyFile == "" {
				return errors.New("codec serve: temporal.codecKeyFile is not set: payloads are not encrypted, there is nothing to decode")
			}
			codec, err := temporalclient.LoadCodec(cfg.Temporal.CodecKeyFile)
			if err != nil {
				return fmt.Errorf("codec serve: temporal.codecKeyFile: %w", err)
			}
			var token string
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("codec serve: --token-file: %w", err)
				}
				if token = strings.TrimSpace(string(b)); token == "" {
					return fmt.Errorf("codec serve: --token-file %s is empty", tokenFile)
				}
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("codec serve: --listen %s: %w", listen, err)
			}
			// the command's context ends on SIGINT or SIGTERM
			ctx := cmd.Context()
			srv := &http.Server{Handler: codec.Handler(origin, token), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			type serving struct {
				URL    string `json:"url"`
				Origin string `json:"origin"`
			}
			res := serving{"http://" + ln.Addr().String(), origin}
			if err := emit(cmd, outputText, res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "codec server %s for the Web UI at %s\n", res.URL, res.Origin)
				return err
			}); err != nil {
				ln.Close()
				return err
			}
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("codec serve: %w", err)
			}
			return nil
		},
	}
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:8234", "address to serve on")
	serve.Flags().StringVar(&origin, "origin", "http://127.0.0.1:8233", "URL of the Web UI (CORS origin)")
	serve.Flags().StringVar(&tokenFile, "token-file", "", "file holding a bearer token requests must carry")
	cmd.AddCommand(serve)
	return cmd
}
