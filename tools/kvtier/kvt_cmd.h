/*  =========================================================================
    kvt_cmd - the subcommands of the kvtier command

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_CMD_H_INCLUDED
#define KVT_CMD_H_INCLUDED

//  Each takes the arguments after its own name (argv [0] is the name) and
//  returns the process exit code.
int kvt_cmd_serve (int argc, char **argv);      //  Run the runtime until SIGINT/SIGTERM
int kvt_cmd_client (int argc, char **argv);     //  Talk to a running server
int kvt_cmd_replay (int argc, char **argv);     //  Replay a Mooncake trace (live or --simulate)
int kvt_cmd_demo (int argc, char **argv);       //  In-process replay of the bundled trace slice
int kvt_cmd_bench (int argc, char **argv);      //  Benchmarks against same-run baselines
int kvt_cmd_actor (int argc, char **argv);      //  Internal: one actor as its own process
int kvt_simulate_main (int argc, char **argv);  //  replay --simulate / --list-policies / --curve

#endif
