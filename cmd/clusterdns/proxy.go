package main

import (
	"context"
	"errors"
	"io"
)

// runProxy is the node agent; see proxy/.
func runProxy(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not built yet")
}
