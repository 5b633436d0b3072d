package cluster

import (
	"fmt"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// What a client node may propose through the peer API, checked before it
// reaches the engine.

// clientCommand refuses what a client may not propose and stamps the rest
// with this server's clock (see Propose). grant is the lease id a grant
// asks for (0: none, or the entry's index decides).
func clientCommand(b []byte) (cmd []byte, grant int64, err error) {
	if grant, err = checkClientCommand(b); err != nil {
		return nil, 0, err
	}
	cmd, err = fsm.WithTime(b, time.Now().UnixMilli())
	return cmd, grant, err
}

// checkClientCommand refuses what a client may not propose (see Propose).
func checkClientCommand(b []byte) (grant int64, err error) {
	cmd, err := fsm.DecodeCommand(b)
	if err != nil {
		return 0, err
	}
	if cmd.Session == 0 {
		return 0, fmt.Errorf("a command from a client needs a dedup id: %w", errs.Invalid)
	}
	switch cmd.Kind {
	case fsm.KindTxn:
		if err := fsm.CheckTxnSize(cmd.Txn); err != nil {
			return 0, err
		}
		return 0, fsm.RejectReserved(cmd.Txn)
	case fsm.KindLeaseGrant:
		return cmd.Grant.ID, nil
	case fsm.KindLeaseRevoke:
		if cmd.Revoke.Expired {
			return 0, fmt.Errorf("only a group leader expires leases: %w", errs.Invalid)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("command kind %d is not a client's: %w", cmd.Kind, errs.Invalid)
}

// grantInShard refuses a client's grant of an id drawn for another shard
// than sid, the one its group resolves to here (the shard it would be
// proposed in): the client learned the group's shard from a server whose
// catalog lagged, and a group created again under the name would hand out
// an id of the old one's. ErrConflict, as for an id the group holds: the
// client draws again, asking another server for the group's shard.
func grantInShard(id int64, group string, sid uint64) error {
	if id == 0 || uint64(id)>>32 == sid {
		return nil
	}
	if group == "" {
		group = DefaultGroup
	}
	return fmt.Errorf("lease id %d was drawn for shard %d, group %q is shard %d here: %w",
		id, uint64(id)>>32, group, sid, errs.Conflict)
}
