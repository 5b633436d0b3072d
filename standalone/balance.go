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
// none usable is 503 no_instance.

func (s *Server) balance(c *gin.Context) {
	if err := params(c, "strategy", "key"); err != nil {
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
	inst, err := s.node.Group(c.GetString(keyGroup)).Balancer().Pick(c.Request.Context(), c.Param("name"), opt)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, toInstanceJSON(&inst), noRevision)
}
