//! JSON-lines event log beside the text log (`lxc_autoscale.log` -> `lxc_autoscale.json`): one line
//! per applied change or failure, with the field names the predecessor's log viewers read.
