package zone

import (
	"log/slog"
	"testing"
)

// The health check node port reaches the model from manifests (and so from
// the API, which converts with the same function).
func TestHealthCheckNodePortConverted(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want int32
	}{
		{"eTP Local LoadBalancer", `{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 32100, clusterIP: 10.0.0.1, ports: [{port: 80, nodePort: 30080}]}`, 32100},
		{"eTP Cluster", `{type: LoadBalancer, clusterIP: 10.0.0.1, ports: [{port: 80, nodePort: 30080}]}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := parseManifests("f.yaml", []byte("apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: dev}\nspec: "+tt.spec+"\n"), slog.Default())
			if err != nil {
				t.Fatal(err)
			}
			if len(objs.services) != 1 {
				t.Fatalf("%d services", len(objs.services))
			}
			if got := objs.services[0].HealthCheckNodePort; got != tt.want {
				t.Errorf("HealthCheckNodePort = %d, want %d", got, tt.want)
			}
		})
	}
}
