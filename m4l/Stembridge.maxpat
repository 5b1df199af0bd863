{
	"patcher": {
		"fileversion": 1,
		"appversion": {
			"major": 8,
			"minor": 6,
			"revision": 2,
			"architecture": "x64",
			"modernui": 1
		},
		"classnamespace": "box",
		"rect": [
			100.0,
			100.0,
			1000.0,
			860.0
		],
		"openinpresentation": 1,
		"default_fontsize": 10.0,
		"default_fontname": "Arial Bold",
		"gridsize": [
			8.0,
			8.0
		],
		"devicewidth": 570.0,
		"description": "Stembridge: separate, generate and vary stems with a local stembridge daemon (OSC)",
		"boxes": [
			{
				"box": {
					"id": "obj-1",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"signal",
						"signal"
					],
					"patching_rect": [
						20.0,
						20.0,
						60.0,
						22.0
					],
					"text": "plugin~"
				}
			},
			{
				"box": {
					"id": "obj-2",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"signal",
						"signal"
					],
					"patching_rect": [
						20.0,
						80.0,
						60.0,
						22.0
					],
					"text": "plugout~"
				}
			},
			{
				"box": {
					"id": "obj-3",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"bang",
						"int",
						"int"
					],
					"patching_rect": [
						120.0,
						20.0,
						90.0,
						22.0
					],
					"text": "live.thisdevice"
				}
			},
			{
				"box": {
					"id": "obj-4",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						120.0,
						50.0,
						40.0,
						22.0
					],
					"text": "init"
				}
			},
			{
				"box": {
					"id": "obj-5",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						""
					],
					"patching_rect": [
						120.0,
						420.0,
						200.0,
						22.0
					],
					"saved_object_attributes": {
						"filename": "stembridge.js",
						"parameter_enable": 0
					},
					"text": "js stembridge.js"
				}
			},
			{
				"box": {
					"id": "obj-6",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						480.0,
						140.0,
						22.0
					],
					"text": "udpsend 127.0.0.1 9977"
				}
			},
			{
				"box": {
					"id": "obj-7",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						340.0,
						380.0,
						100.0,
						22.0
					],
					"text": "udpreceive 9001"
				}
			},
			{
				"box": {
					"id": "obj-8",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 13,
					"outlettype": [
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						""
					],
					"patching_rect": [
						120.0,
						520.0,
						700.0,
						22.0
					],
					"text": "route connection engines modelmenu models queue progress stage status error files clip bars"
				}
			},
			{
				"box": {
					"id": "obj-9",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						120.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						44.0,
						62.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Separate",
							"parameter_mmax": 1,
							"parameter_shortname": "Separate",
							"parameter_type": 2
						}
					},
					"text": "Separate",
					"texton": "Separate",
					"varname": "Separate"
				}
			},
			{
				"box": {
					"id": "obj-10",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						120.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend separate"
				}
			},
			{
				"box": {
					"id": "obj-11",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						200.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						70.0,
						44.0,
						62.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Generate",
							"parameter_mmax": 1,
							"parameter_shortname": "Generate",
							"parameter_type": 2
						}
					},
					"text": "Generate",
					"texton": "Generate",
					"varname": "Generate"
				}
			},
			{
				"box": {
					"id": "obj-12",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						200.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend generate"
				}
			},
			{
				"box": {
					"id": "obj-13",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						280.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						136.0,
						44.0,
						50.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Vary",
							"parameter_mmax": 1,
							"parameter_shortname": "Vary",
							"parameter_type": 2
						}
					},
					"text": "Vary",
					"texton": "Vary",
					"varname": "Vary"
				}
			},
			{
				"box": {
					"id": "obj-14",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						280.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend vary"
				}
			},
			{
				"box": {
					"id": "obj-15",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						360.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						190.0,
						44.0,
						50.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Cancel",
							"parameter_mmax": 1,
							"parameter_shortname": "Cancel",
							"parameter_type": 2
						}
					},
					"text": "Cancel",
					"texton": "Cancel",
					"varname": "Cancel"
				}
			},
			{
				"box": {
					"id": "obj-16",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						360.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend cancel"
				}
			},
			{
				"box": {
					"id": "obj-17",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						440.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						404.0,
						4.0,
						64.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Reconnect",
							"parameter_mmax": 1,
							"parameter_shortname": "Reconnect",
							"parameter_type": 2
						}
					},
					"text": "Reconnect",
					"texton": "Reconnect",
					"varname": "Reconnect"
				}
			},
			{
				"box": {
					"id": "obj-18",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						440.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend reconnect"
				}
			},
			{
				"box": {
					"id": "obj-19",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						520.0,
						120.0,
						60.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						472.0,
						150.0,
						64.0,
						16.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 2,
							"parameter_longname": "Show folder",
							"parameter_mmax": 1,
							"parameter_shortname": "Show folder",
							"parameter_type": 2
						}
					},
					"text": "Show folder",
					"texton": "Show folder",
					"varname": "Show folder"
				}
			},
			{
				"box": {
					"id": "obj-20",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						520.0,
						160.0,
						110.0,
						22.0
					],
					"text": "prepend showfolder"
				}
			},
			{
				"box": {
					"id": "obj-21",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						120.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						66.0,
						62.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"bass",
								"drums",
								"keys",
								"pad",
								"lead",
								"vocals",
								"other"
							],
							"parameter_invisible": 1,
							"parameter_longname": "Stem",
							"parameter_mmax": 6,
							"parameter_shortname": "Stem",
							"parameter_type": 2
						}
					},
					"varname": "Stem"
				}
			},
			{
				"box": {
					"id": "obj-22",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						120.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend stem"
				}
			},
			{
				"box": {
					"id": "obj-23",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						200.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						244.0,
						44.0,
						70.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"clip",
								"range"
							],
							"parameter_invisible": 1,
							"parameter_longname": "Source",
							"parameter_mmax": 1,
							"parameter_shortname": "Source",
							"parameter_type": 2
						}
					},
					"varname": "Source"
				}
			},
			{
				"box": {
					"id": "obj-24",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						200.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend source"
				}
			},
			{
				"box": {
					"id": "obj-25",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						280.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						70.0,
						66.0,
						50.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								8
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 2,
							"parameter_longname": "Bars",
							"parameter_mmax": 32.0,
							"parameter_mmin": 1.0,
							"parameter_shortname": "Bars",
							"parameter_type": 1,
							"parameter_units": "%d bars",
							"parameter_unitstyle": 9
						}
					},
					"varname": "Bars"
				}
			},
			{
				"box": {
					"id": "obj-26",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						280.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend bars"
				}
			},
			{
				"box": {
					"id": "obj-27",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						360.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						124.0,
						66.0,
						50.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								1
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Variations",
							"parameter_mmax": 8.0,
							"parameter_mmin": 1.0,
							"parameter_shortname": "Variations",
							"parameter_type": 1,
							"parameter_units": "%d takes",
							"parameter_unitstyle": 9
						}
					},
					"varname": "Variations"
				}
			},
			{
				"box": {
					"id": "obj-28",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						360.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend variations"
				}
			},
			{
				"box": {
					"id": "obj-29",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						440.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						178.0,
						66.0,
						56.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_invisible": 1,
							"parameter_longname": "Seed",
							"parameter_mmax": 99999.0,
							"parameter_mmin": 0.0,
							"parameter_shortname": "Seed",
							"parameter_type": 1,
							"parameter_units": "seed %d",
							"parameter_unitstyle": 9
						}
					},
					"varname": "Seed"
				}
			},
			{
				"box": {
					"id": "obj-30",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						440.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend seed"
				}
			},
			{
				"box": {
					"id": "obj-31",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						520.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						472.0,
						4.0,
						64.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								9977
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Port",
							"parameter_mmax": 65535.0,
							"parameter_mmin": 1.0,
							"parameter_shortname": "Port",
							"parameter_type": 1,
							"parameter_units": "port %d",
							"parameter_unitstyle": 9
						}
					},
					"varname": "Port"
				}
			},
			{
				"box": {
					"id": "obj-32",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						520.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend daemonport"
				}
			},
			{
				"box": {
					"id": "obj-33",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						600.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						238.0,
						66.0,
						56.0,
						18.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								0.5
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Strength",
							"parameter_mmax": 1.0,
							"parameter_mmin": 0.0,
							"parameter_shortname": "Strength",
							"parameter_type": 0,
							"parameter_units": "str %.2f",
							"parameter_unitstyle": 9
						}
					},
					"varname": "Strength"
				}
			},
			{
				"box": {
					"id": "obj-34",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						600.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend strength"
				}
			},
			{
				"box": {
					"id": "obj-35",
					"keymode": 1,
					"lines": 1,
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						680.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						44.0,
						88.0,
						212.0,
						18.0
					]
				}
			},
			{
				"box": {
					"id": "obj-36",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						680.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend prompt"
				}
			},
			{
				"box": {
					"id": "obj-37",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						680.0,
						200.0,
						50.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						88.0,
						40.0,
						18.0
					],
					"text": "Prompt"
				}
			},
			{
				"box": {
					"id": "obj-38",
					"items": [
						"auto"
					],
					"maxclass": "umenu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"int",
						"",
						""
					],
					"patching_rect": [
						760.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						298.0,
						66.0,
						80.0,
						18.0
					]
				}
			},
			{
				"box": {
					"id": "obj-39",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						760.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend engine"
				}
			},
			{
				"box": {
					"id": "obj-40",
					"items": [
						"default"
					],
					"maxclass": "umenu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"int",
						"",
						""
					],
					"patching_rect": [
						840.0,
						220.0,
						60.0,
						30.0
					],
					"presentation": 1,
					"presentation_rect": [
						382.0,
						66.0,
						100.0,
						18.0
					]
				}
			},
			{
				"box": {
					"id": "obj-41",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						840.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend model"
				}
			},
			{
				"box": {
					"id": "obj-42",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						600.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						4.0,
						396.0,
						18.0
					],
					"text": "Connecting to stembridge..."
				}
			},
			{
				"box": {
					"fontsize": 9.0,
					"id": "obj-43",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						630.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						262.0,
						88.0,
						300.0,
						18.0
					],
					"text": ""
				}
			},
			{
				"box": {
					"fontsize": 9.0,
					"id": "obj-44",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						660.0,
						200.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						262.0,
						106.0,
						204.0,
						14.0
					],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-45",
					"ignoreclick": 1,
					"maxclass": "multislider",
					"numinlets": 1,
					"numoutlets": 2,
					"orientation": 0,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						240.0,
						660.0,
						150.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						110.0,
						252.0,
						12.0
					],
					"setminmax": [
						0.0,
						1.0
					],
					"setstyle": 1,
					"size": 1
				}
			},
			{
				"box": {
					"id": "obj-46",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						400.0,
						660.0,
						100.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						470.0,
						106.0,
						94.0,
						14.0
					],
					"text": ""
				}
			},
			{
				"box": {
					"fontsize": 9.0,
					"id": "obj-47",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						690.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						122.0,
						560.0,
						14.0
					],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-48",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						720.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						136.0,
						560.0,
						14.0
					],
					"text": "",
					"textcolor": [
						0.9,
						0.3,
						0.2,
						1.0
					]
				}
			},
			{
				"box": {
					"hidden": 0,
					"id": "obj-49",
					"lines": 2,
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						120.0,
						750.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						152.0,
						460.0,
						14.0
					],
					"readonly": 1
				}
			},
			{
				"box": {
					"id": "obj-50",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						120.0,
						780.0,
						300.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						4.0,
						24.0,
						464.0,
						18.0
					],
					"text": "Select an audio clip"
				}
			},
			{
				"box": {
					"id": "obj-51",
					"maxclass": "live.toggle",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						920.0,
						220.0,
						15.0,
						15.0
					],
					"presentation": 1,
					"presentation_rect": [
						320.0,
						46.0,
						14.0,
						14.0
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_invisible": 1,
							"parameter_longname": "MIDI",
							"parameter_mmax": 1,
							"parameter_shortname": "MIDI",
							"parameter_type": 2
						}
					},
					"varname": "MIDI"
				}
			},
			{
				"box": {
					"id": "obj-52",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						920.0,
						260.0,
						110.0,
						22.0
					],
					"text": "prepend midi"
				}
			},
			{
				"box": {
					"id": "obj-53",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						940.0,
						220.0,
						40.0,
						20.0
					],
					"presentation": 1,
					"presentation_rect": [
						336.0,
						44.0,
						30.0,
						18.0
					],
					"text": "MIDI"
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"destination": [
						"obj-2",
						0
					],
					"source": [
						"obj-1",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-2",
						1
					],
					"source": [
						"obj-1",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-4",
						0
					],
					"source": [
						"obj-3",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-4",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-6",
						0
					],
					"source": [
						"obj-5",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-7",
						0
					],
					"source": [
						"obj-5",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-8",
						0
					],
					"source": [
						"obj-5",
						2
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-7",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-10",
						0
					],
					"source": [
						"obj-9",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-10",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-12",
						0
					],
					"source": [
						"obj-11",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-12",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-14",
						0
					],
					"source": [
						"obj-13",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-14",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-16",
						0
					],
					"source": [
						"obj-15",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-16",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-18",
						0
					],
					"source": [
						"obj-17",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-18",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-19",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-20",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-22",
						0
					],
					"source": [
						"obj-21",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-22",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-24",
						0
					],
					"source": [
						"obj-23",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-24",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-26",
						0
					],
					"source": [
						"obj-25",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-26",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-28",
						0
					],
					"source": [
						"obj-27",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-28",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-30",
						0
					],
					"source": [
						"obj-29",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-30",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-32",
						0
					],
					"source": [
						"obj-31",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-32",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-34",
						0
					],
					"source": [
						"obj-33",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-34",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-36",
						0
					],
					"source": [
						"obj-35",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-36",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-39",
						0
					],
					"source": [
						"obj-38",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-39",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-41",
						0
					],
					"source": [
						"obj-40",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-41",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-42",
						0
					],
					"source": [
						"obj-8",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-38",
						0
					],
					"source": [
						"obj-8",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-40",
						0
					],
					"source": [
						"obj-8",
						2
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-43",
						0
					],
					"source": [
						"obj-8",
						3
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-44",
						0
					],
					"source": [
						"obj-8",
						4
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-45",
						0
					],
					"source": [
						"obj-8",
						5
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-46",
						0
					],
					"source": [
						"obj-8",
						6
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-47",
						0
					],
					"source": [
						"obj-8",
						7
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-48",
						0
					],
					"source": [
						"obj-8",
						8
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-49",
						0
					],
					"source": [
						"obj-8",
						9
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-50",
						0
					],
					"source": [
						"obj-8",
						10
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-25",
						0
					],
					"source": [
						"obj-8",
						11
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-52",
						0
					],
					"source": [
						"obj-51",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-5",
						0
					],
					"source": [
						"obj-52",
						0
					]
				}
			}
		],
		"parameters": {
			"obj-11": [
				"Generate",
				"Generate",
				0
			],
			"obj-13": [
				"Vary",
				"Vary",
				0
			],
			"obj-15": [
				"Cancel",
				"Cancel",
				0
			],
			"obj-17": [
				"Reconnect",
				"Reconnect",
				0
			],
			"obj-19": [
				"Show folder",
				"Show folder",
				0
			],
			"obj-21": [
				"Stem",
				"Stem",
				0
			],
			"obj-23": [
				"Source",
				"Source",
				0
			],
			"obj-25": [
				"Bars",
				"Bars",
				0
			],
			"obj-27": [
				"Variations",
				"Variations",
				0
			],
			"obj-29": [
				"Seed",
				"Seed",
				0
			],
			"obj-31": [
				"Port",
				"Port",
				0
			],
			"obj-33": [
				"Strength",
				"Strength",
				0
			],
			"obj-51": [
				"MIDI",
				"MIDI",
				0
			],
			"obj-9": [
				"Separate",
				"Separate",
				0
			],
			"inherited_shortname": 1
		},
		"dependency_cache": [
			{
				"name": "stembridge.js",
				"patcherrelativepath": ".",
				"type": "TEXT",
				"implicit": 1
			},
			{
				"name": "stembridge_core.js",
				"patcherrelativepath": ".",
				"type": "TEXT",
				"implicit": 1
			},
			{
				"name": "stembridge_midi.js",
				"patcherrelativepath": ".",
				"type": "TEXT",
				"implicit": 1
			}
		],
		"project": {
			"version": 1,
			"creationdate": 3590052493,
			"modificationdate": 3590052493,
			"viewrect": [
				0.0,
				0.0,
				300.0,
				500.0
			],
			"autoorganize": 1,
			"hideprojectwindow": 1,
			"showdependencies": 1,
			"autolocalize": 0,
			"contents": {
				"patchers": {}
			},
			"layout": {},
			"searchpath": {},
			"detailsvisible": 0,
			"amxdtype": 1633771873,
			"readonly": 0,
			"devpathtype": 0,
			"devpath": ".",
			"sortmode": 0,
			"viewmode": 0,
			"includepackages": 0
		},
		"autosave": 0
	}
}
