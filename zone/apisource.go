package zone

import "errors"

// NewAPISource returns a Source reading the Kubernetes API.
// TODO(apisource): placeholder until the informer source lands; replace this file.
func NewAPISource(cfg APIConfig) (Source, error) {
	return nil, errors.New("reading the Kubernetes API is not available yet; use \"manifests PATH\"")
}
