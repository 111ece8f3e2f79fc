/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The example app's root daemon: a stand-in that says it ran. Build it static:
 *   gcc -static -O2 -o appd appd.c */
#include <stdio.h>

int main(void)
{
    puts("appd: running as the host's org.example.App daemon");
    return 0;
}
