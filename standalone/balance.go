package standalone

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// GET /v1/balance/{name}?strategy=priority|round_robin|hash&key=K picks one
// usable instance of the service (dister.Balancer.Pick) and answers it as
// GET /v1/services/{name} shows instances. Strategies: priority (the
// default) picks at random weighted by priority; round_robin rotates;
// hash picks by consistent hashing of key, which it requires (and only it
// takes). Passing instances are used, warning ones only when none passes;
// none usable is 503 no_instance; a local view that stopped hearing from
// the cluster is 503 stale_view. fresh=true reads the registry from the
// group's leader instead of the view (dister.Fresh).

func (s *Server) balance(c *gin.Context) {
	if err := params(c, "strategy", "key", "fresh"); err != nil {
		s.fail(c, err)
		return
	}
	strategy := c.Query("strategy")
	key, hasKey := c.GetQuery("key")
	var opt dister.PickOption
	switch strategy {
	case "", "priority":
		opt = dister.PriorityWeighted()
	case "round_robin":
		opt = dister.RoundRobin()
	case "hash":
		if key == "" {
			s.fail(c, invalidf("?strategy=hash needs ?key="))
			return
		}
		opt = dister.HashKey(key)
	default:
		s.fail(c, invalidf("?strategy=%q: want priority, round_robin or hash", strategy))
		return
	}
	if hasKey && strategy != "hash" {
		s.fail(c, invalidf("?key= is for ?strategy=hash"))
		return
	}
	// The balancer keeps a watched view per group and service, started on
	// the first pick; it must not start one for a group that does not exist.
	if err := s.groupExists(c); err != nil {
		s.fail(c, err)
		return
	}
	opts := []dister.PickOption{opt}
	switch c.Query("fresh") {
	case "", "false":
	case "true":
		opts = append(opts, dister.Fresh())
	default:
		s.fail(c, invalidf("?fresh=%q: want true or false", c.Query("fresh")))
		return
	}
	inst, err := s.node.Group(c.GetString(keyGroup)).Balancer().Pick(c.Request.Context(), c.Param("name"), opts...)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, toInstanceJSON(&inst), noRevision)
}
